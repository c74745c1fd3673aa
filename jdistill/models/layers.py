"""Parameter-holding building blocks: a dense layer and an embedding table.

Every module keeps its parameters in ``param_dtype`` and computes in
``dtype``; both come from the model's :class:`DecoderConfig`.
"""

import jax
import jax.numpy as jnp
from flax import nnx


class Linear(nnx.Module):
    """``y = x @ kernel (+ bias)`` with ``kernel`` of shape ``[in, out]``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool,
        init_std: float,
        param_dtype,
        dtype,
        rngs: nnx.Rngs,
    ):
        self.dtype = dtype
        self.kernel = nnx.Param(
            init_std * jax.random.normal(rngs.params(), (in_features, out_features), param_dtype)
        )
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype)) if use_bias else None

    def __call__(self, x_BxTxI: jnp.ndarray) -> jnp.ndarray:
        y_BxTxO = jnp.dot(x_BxTxI.astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y_BxTxO = y_BxTxO + self.bias[...].astype(self.dtype)
        return y_BxTxO


class Embed(nnx.Module):
    """A ``[num_embeddings, features]`` lookup table."""

    def __init__(
        self,
        num_embeddings: int,
        features: int,
        *,
        init_std: float,
        param_dtype,
        dtype,
        rngs: nnx.Rngs,
    ):
        self.dtype = dtype
        self.embedding = nnx.Param(
            init_std * jax.random.normal(rngs.params(), (num_embeddings, features), param_dtype)
        )

    def __call__(self, ids_BxT: jnp.ndarray) -> jnp.ndarray:
        return jnp.take(self.embedding[...], ids_BxT, axis=0).astype(self.dtype)


def soft_cap(x: jnp.ndarray, cap: float | None) -> jnp.ndarray:
    """``tanh(x / cap) * cap`` (Gemma's logit soft-capping); ``x`` itself when ``cap`` is ``None``."""
    if cap is None:
        return x
    return jnp.tanh(x / cap) * cap
