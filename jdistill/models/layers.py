"""Parameter-holding building blocks: a dense layer and an embedding table.

Every module keeps its parameters in ``param_dtype`` and computes in
``dtype``; both come from the model's :class:`DecoderConfig`.
"""

import jax
import jax.numpy as jnp
from flax import nnx


class Linear(nnx.Module):
    """``y = x @ kernel (+ bias)`` with ``kernel`` of shape ``[in, out]``.

    With a LoRA adapter attached (:func:`jdistill.models.lora.apply_lora`):
    ``y = x @ kernel (+ bias) + (alpha / r) * dropout(x) @ A @ B``, with
    ``A`` ``[in, r]`` and ``B`` ``[r, out]`` in ``self.lora`` (an ``nnx.LoRA``).
    """

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
        self.lora = nnx.data(None)  # an nnx.LoRA adapter (jdistill.models.lora), else None
        self.lora_scale = 0.0  # alpha / rank
        self.lora_dropout = 0.0  # dropout rate on the adapter's input (training only)
        self.lora_key = nnx.data(None)  # this step's dropout key (set by jdistill.models.lora.set_dropout_keys)

    def __call__(self, x_BxTxI: jnp.ndarray) -> jnp.ndarray:
        y_BxTxO = jnp.dot(x_BxTxI.astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y_BxTxO = y_BxTxO + self.bias[...].astype(self.dtype)
        if self.lora is not None:
            x_lora = x_BxTxI.astype(self.dtype)
            if self.lora_key is not None and self.lora_dropout > 0:
                keep = 1.0 - self.lora_dropout
                mask = jax.random.bernoulli(jax.random.wrap_key_data(self.lora_key[...]), keep, x_lora.shape)
                x_lora = jnp.where(mask, x_lora / keep, jnp.zeros_like(x_lora))
            y_BxTxO = y_BxTxO + (self.lora_scale * self.lora(x_lora)).astype(y_BxTxO.dtype)
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
