"""RMSNorm and LayerNorm, computed in float32 whatever the compute dtype."""

import jax
import jax.numpy as jnp
from flax import nnx


class RMSNorm(nnx.Module):
    """``x / rms(x) * scale`` over the last axis (Llama/Qwen style)."""

    def __init__(self, features: int, *, eps: float, param_dtype, dtype, rngs: nnx.Rngs):
        del rngs  # Deterministic initialisation.
        self.eps = eps
        self.dtype = dtype
        self.scale = nnx.Param(jnp.ones((features,), param_dtype))

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (normed * self.scale[...].astype(jnp.float32)).astype(self.dtype)


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
    return NORMS[config.norm_type](
        features,
        eps=config.norm_eps,
        param_dtype=config.param_dtype,
        dtype=config.dtype,
        rngs=rngs,
    )
