"""MLP activations by the names Hugging Face configs use.

``gelu_new`` (GPT-2) and ``gelu_pytorch_tanh`` are the tanh approximation of
GELU; ``gelu`` is the exact erf form.
"""

import functools

import jax

ACTIVATIONS = {
    "silu": jax.nn.silu,
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "relu": jax.nn.relu,
}
