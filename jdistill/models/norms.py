"""RMSNorm and LayerNorm, computed in float32 whatever the compute dtype."""

import jax
import jax.numpy as jnp
from flax import nnx


class RMSNorm(nnx.Module):
    """``x / rms(x) * scale`` over the last axis (Llama/Qwen style).

    With ``unit_offset`` it is ``x / rms(x) * (1 + scale)`` and the scale
    starts at 0 (Gemma): the stored parameter is the checkpoint's, unchanged.
    """

    def __init__(
        self, features: int, *, eps: float, param_dtype, dtype, rngs: nnx.Rngs, unit_offset: bool = False
    ):
        del rngs  # Deterministic initialisation.
        self.eps = eps
        self.dtype = dtype
        self.unit_offset = unit_offset
        init = jnp.zeros if unit_offset else jnp.ones
        self.scale = nnx.Param(init((features,), param_dtype))

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        scale = self.scale[...].astype(jnp.float32)
        if self.unit_offset:
            scale = 1.0 + scale
        return (normed * scale).astype(self.dtype)


class LayerNorm(nnx.Module):
    """``(x - mean) / std * scale + bias`` over the last axis (GPT-2 style)."""

    def __init__(self, features: int, *, eps: float, param_dtype, dtype, rngs: nnx.Rngs):
        del rngs  # Deterministic initialisation.
        self.eps = eps
        self.dtype = dtype
        self.scale = nnx.Param(jnp.ones((features,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((features,), param_dtype))

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        centred = x32 - mean
        var = jnp.mean(centred * centred, axis=-1, keepdims=True)
        normed = centred * jax.lax.rsqrt(var + self.eps)
        out = normed * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return out.astype(self.dtype)


# Norm classes by ``DecoderConfig.norm_type``.
NORMS = {
    "rms": RMSNorm,
    "layer": LayerNorm,
}


def make_norm(config, features: int, *, rngs: nnx.Rngs) -> nnx.Module:
    """Builds the norm ``config.norm_type`` names over ``features``."""
    extra = {"unit_offset": True} if config.norm_unit_offset else {}
    return NORMS[config.norm_type](
        features,
        eps=config.norm_eps,
        param_dtype=config.param_dtype,
        dtype=config.dtype,
        rngs=rngs,
        **extra,
    )
