"""Rotary position embeddings (RoPE), with linear and Llama 3 scaling.

The layout follows the Hugging Face convention: a head vector is split into
two halves ``(x1, x2)`` and rotated as ``(x1*cos - x2*sin, x2*cos + x1*sin)``
with the frequency table repeated over both halves.
"""

import math

import jax.numpy as jnp
import numpy as np

from jdistill.models.config import DecoderConfig, RopeScaling


def _unscaled_inverse_frequencies(head_dim: int, theta: float) -> np.ndarray:
    exponents = np.arange(0, head_dim, 2, dtype=np.float64) / head_dim
    return 1.0 / (theta**exponents)


def _scale_linear(inv_freq: np.ndarray, scaling: RopeScaling) -> np.ndarray:
    return inv_freq / scaling.factor


def _scale_llama3(inv_freq: np.ndarray, scaling: RopeScaling) -> np.ndarray:
    """Llama 3.1 scaling: long wavelengths are slowed, short ones kept."""
    old_context = scaling.original_max_position_embeddings
    low_freq_wavelen = old_context / scaling.low_freq_factor
    high_freq_wavelen = old_context / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (old_context / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return np.where(is_medium, smoothed, scaled)


# Frequency scalers by ``RopeScaling.rope_type``.
_SCALERS = {
    "linear": _scale_linear,
    "llama3": _scale_llama3,
}


def inverse_frequencies(config: DecoderConfig, *, local: bool = False) -> np.ndarray:
    """Returns the ``[head_dim // 2]`` float32 inverse frequencies of ``config``.

    ``local=True`` gives those of the sliding-window layers of a model with
    per-layer-type rope (``config.local_rope_theta``/``local_rope_scaling``).
    A host constant: it depends only on the (static) config.
    """
    if local:
        if config.local_rope_theta is None:
            raise ValueError("inverse_frequencies(local=True) needs config.local_rope_theta")
        theta, scaling = config.local_rope_theta, config.local_rope_scaling
    else:
        theta, scaling = config.rope_theta, config.rope_scaling
    inv_freq = _unscaled_inverse_frequencies(config.head_dim, theta)
    if scaling is not None:
        inv_freq = _SCALERS[scaling.rope_type](inv_freq, scaling)
    return inv_freq.astype(np.float32)


def rope_tables(positions_BxT: jnp.ndarray, inv_freq: np.ndarray):
    """Returns float32 ``(cos, sin)`` tables of shape ``[B, T, head_dim]``."""
    angles_BxTxR = positions_BxT.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
    angles_BxTxD = jnp.concatenate([angles_BxTxR, angles_BxTxR], axis=-1)
    return jnp.cos(angles_BxTxD), jnp.sin(angles_BxTxD)


def apply_rope(x_BxTxNxD: jnp.ndarray, cos_BxTxD: jnp.ndarray, sin_BxTxD: jnp.ndarray):
    """Rotates every head of ``x`` by the per-position angles.

    The rotation runs in float32 and the result is cast back to ``x.dtype``.
    """
    x = x_BxTxNxD.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos = cos_BxTxD[:, :, None, :]
    sin = sin_BxTxD[:, :, None, :]
    return (x * cos + rotated * sin).astype(x_BxTxNxD.dtype)
