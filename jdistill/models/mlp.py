"""The feed-forward block: gated (SwiGLU-style) or plain two-layer MLP."""

import functools

import jax.numpy as jnp
from flax import nnx

from jdistill.models.activations import ACTIVATIONS
from jdistill.models.config import DecoderConfig
from jdistill.models.layers import Linear


class MLP(nnx.Module):
    """``down(act(gate(x)) * up(x))`` when gated, else ``down(act(up(x)))``."""

    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        self.activation = config.activation
        linear = functools.partial(
            Linear,
            use_bias=config.mlp_bias,
            init_std=config.init_std,
            param_dtype=config.param_dtype,
            dtype=config.dtype,
            rngs=rngs,
        )
        d, f = config.hidden_size, config.mlp_dim
        self.gate_proj = linear(d, f) if config.gated_mlp else None
        self.up_proj = linear(d, f)
        self.down_proj = linear(f, d)

    def __call__(self, x_BxTxd: jnp.ndarray) -> jnp.ndarray:
        act = ACTIVATIONS[self.activation]
        if self.gate_proj is not None:
            h_BxTxF = act(self.gate_proj(x_BxTxd)) * self.up_proj(x_BxTxd)
        else:
            h_BxTxF = act(self.up_proj(x_BxTxd))
        return self.down_proj(h_BxTxF)
