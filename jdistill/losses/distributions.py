"""Numerically safe building blocks shared by the divergence kernels.

Everything here works in float32 whatever the input dtype, treats ``-inf``
logits as zero-probability entries, and never produces NaN values or NaN
gradients from ``0 * log 0`` terms.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ArrayLike = Any


def check_logits_pair(student_logits: Array, teacher_logits: Array, name: str) -> None:
    """Raises a clear error (at trace time) for logits a divergence cannot take."""
    for label, logits in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not jnp.issubdtype(jnp.result_type(logits), jnp.floating):
            raise TypeError(
                f"{name}: {label} must be a floating-point array, got dtype "
                f"{jnp.result_type(logits)}; cast token ids to logits first."
            )
        if jnp.ndim(logits) < 1:
            raise ValueError(f"{name}: {label} needs a vocabulary axis, got a scalar.")
    if jnp.shape(student_logits) != jnp.shape(teacher_logits):
        raise ValueError(
            f"{name}: student_logits {jnp.shape(student_logits)} and teacher_logits "
            f"{jnp.shape(teacher_logits)} must have the same shape. Models with different "
            "vocabularies need a cross-vocabulary method (DSKD-CMA, ULD, MinED, exact "
            "token alignment); a teacher whose vocabulary is only padded must be truncated "
            "to the shared vocabulary first."
        )


def check_unit_interval(value: ArrayLike, name: str, kernel: str) -> None:
    """Checks ``0 <= value <= 1`` when the value is known at trace time."""
    try:
        concrete = np.asarray(value, dtype=np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return  # A traced value: it cannot be checked before it runs.
    ok = bool(((concrete >= 0) & (concrete <= 1)).all())
    if not ok:
        raise ValueError(f"{kernel}: {name} must lie in [0, 1], got {value}.")


def check_temperature(temperature: ArrayLike, kernel: str) -> None:
    if isinstance(temperature, numbers.Real) and not temperature > 0:
        raise ValueError(f"{kernel}: temperature must be > 0, got {temperature}.")


def log_probs(logits: Array, *, temperature: ArrayLike = 1.0, where: Array | None = None) -> Array:
    """``log_softmax(logits / temperature)`` over the last axis, in float32.

    Entries that are ``-inf`` or outside ``where`` get log-probability ``-inf``
    (probability exactly 0). A row with no valid entry gets ``-inf`` everywhere,
    so every divergence of such a row is 0, with zero gradient.

    Args:
      logits: ``[..., V]`` array of any floating dtype.
      temperature: positive scalar dividing the logits.
      where: optional boolean mask broadcastable to ``logits``; ``False``
        entries take no part in the distribution.

    Returns:
      ``[..., V]`` float32 log-probabilities.
    """
    scaled = logits.astype(jnp.float32) / jnp.asarray(temperature, jnp.float32)
    valid = scaled > -jnp.inf
    if where is not None:
        valid = valid & jnp.broadcast_to(where, scaled.shape)
    row_has_mass = jnp.any(valid, axis=-1, keepdims=True)
    # Invalid entries become -inf; rows without any valid entry are replaced by
    # zeros so that log_softmax stays finite, then masked out again below.
    safe = jnp.where(valid, scaled, -jnp.inf)
    safe = jnp.where(row_has_mass, safe, 0.0)
    out = jax.nn.log_softmax(safe, axis=-1)
    return jnp.where(valid, out, -jnp.inf)


def kl_from_log_probs(log_p: Array, log_q: Array) -> Array:
    """``sum_v p_v (log p_v - log q_v)`` over the last axis, with ``0 log 0 = 0``.

    Terms with ``p_v = 0`` contribute exactly 0 and no gradient, whatever
    ``log q_v`` is; a term with ``p_v > 0`` and ``q_v = 0`` is ``+inf`` (the
    divergence is genuinely infinite there).
    """
    has_mass = log_p > -jnp.inf
    p = jnp.exp(log_p)
    # Replace the log values under zero mass before subtracting, so that neither
    # the value nor the gradient ever sees (-inf) - (-inf) or 0 * inf.
    safe_log_p = jnp.where(has_mass, log_p, 0.0)
    safe_log_q = jnp.where(has_mass, log_q, 0.0)
    return jnp.sum(p * (safe_log_p - safe_log_q), axis=-1)


def log_mixture(log_p: Array, log_q: Array, weight_p: ArrayLike) -> Array:
    """``log(w p + (1 - w) q)`` computed in log space.

    ``weight_p`` is a scalar or an array broadcastable against ``log_p``; the
    endpoints 0 and 1 are exact (the corresponding side drops out).
    """
    w = jnp.asarray(weight_p, jnp.float32)
    # log(0) = -inf is fine here: logaddexp(-inf, x) = x with a zero gradient on
    # the -inf side. jnp.log would warn for Python floats, so use where.
    log_w = jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)
    log_1mw = jnp.where(w < 1, jnp.log(jnp.where(w < 1, 1.0 - w, 1.0)), -jnp.inf)
    return _logaddexp_safe(log_w + log_p, log_1mw + log_q)


def _logaddexp_safe(a: Array, b: Array) -> Array:
    """``logaddexp`` whose gradient is finite when both inputs are ``-inf``."""
    both_empty = (a == -jnp.inf) & (b == -jnp.inf)
    a_safe = jnp.where(both_empty, 0.0, a)
    b_safe = jnp.where(both_empty, 0.0, b)
    return jnp.where(both_empty, -jnp.inf, jnp.logaddexp(a_safe, b_safe))


def broadcast_per_sequence(value: ArrayLike, token_shape: tuple[int, ...], name: str, kernel: str) -> Array:
    """Expands a scalar or per-sequence parameter to broadcast over ``[..., V]``.

    ``value`` may be a scalar, or an array whose shape is a prefix of the token
    shape ``logits.shape[:-1]`` (for ``[B, T, V]`` logits: ``[B]`` gives one
    value per sequence, ``[B, T]`` one per token). Trailing axes are appended so
    that the result broadcasts against the logits.
    """
    arr = jnp.asarray(value, jnp.float32)
    if arr.ndim > len(token_shape) or tuple(arr.shape) != tuple(token_shape[: arr.ndim]):
        raise ValueError(
            f"{kernel}: {name} of shape {arr.shape} must be a scalar or match the leading "
            f"axes of the token shape {tuple(token_shape)} (e.g. one value per sequence)."
        )
    return arr.reshape(arr.shape + (1,) * (len(token_shape) - arr.ndim + 1))
