"""Reductions from per-token loss values to a scalar.

Kernels return per-token values; the reduction is the caller's explicit choice.
Two conventions appear in the distillation literature:

* :func:`token_mean` — the sum over response tokens divided by their number
  (DSKD, DistiLLM, TRL). Under gradient accumulation or data parallelism pass
  the *global* token count as ``normalizer`` so that the micro-batch losses add
  up to exactly the full-batch loss.
* :func:`sequence_mean` — the mean over each sequence's tokens, then over the
  sequences (DistiLLM-2's released code).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def _check(values: Array, mask: Array, name: str) -> None:
    if jnp.shape(mask) != jnp.shape(values):
        raise ValueError(f"{name}: mask {jnp.shape(mask)} must have the shape of values {jnp.shape(values)}.")


def _masked(values: Array, mask: Array) -> tuple[Array, Array]:
    weights = mask.astype(jnp.float32)
    # where, not multiply: a value of inf or nan under a zero mask must not leak.
    return jnp.where(mask.astype(bool), values.astype(jnp.float32), 0.0) * weights, weights


def token_mean(values: Array, mask: Array, *, normalizer=None) -> Array:
    r"""Mean of ``values`` over the tokens selected by ``mask``.

    .. math:: L = \frac{\sum_i m_i \ell_i}{N}, \qquad N = \sum_i m_i \ \text{unless given}

    Args:
      values: per-token values, e.g. ``[B, T]``.
      mask: same shape; nonzero entries select tokens (bool or 0/1 weights).
      normalizer: optional count to divide by instead of the local one, e.g. the
        number of response tokens in the whole global batch across
        gradient-accumulation micro-batches and data-parallel replicas.

    Returns:
      A float32 scalar; 0 when no token is selected.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import token_mean
      >>> v = jnp.array([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0]])
      >>> m = jnp.array([[1, 1, 0], [1, 0, 0]])
      >>> float(token_mean(v, m))
      2.0
      >>> float(token_mean(v, m, normalizer=6))
      1.0
    """
    _check(values, mask, "token_mean")
    masked, weights = _masked(values, mask)
    total = jnp.sum(masked)
    count = jnp.sum(weights) if normalizer is None else jnp.asarray(normalizer, jnp.float32)
    return jnp.where(count > 0, total / jnp.where(count > 0, count, 1.0), 0.0)


def sequence_mean(values: Array, mask: Array, *, normalizer=None) -> Array:
    r"""Mean over each sequence's selected tokens, then over sequences.

    .. math:: L = \frac{1}{S} \sum_{b:\, n_b > 0} \frac{\sum_t m_{bt} \ell_{bt}}{n_b},
              \qquad n_b = \sum_t m_{bt}

    Sequences without any selected token are left out (they would be 0/0); ``S``
    is the number of remaining sequences unless ``normalizer`` gives it (the
    global number of sequences, for exact gradient accumulation).

    Args:
      values: per-token values ``[B, T]`` (any leading axes; the last is time).
      mask: same shape.
      normalizer: optional number of sequences to divide by.

    Returns:
      A float32 scalar; 0 when no token is selected.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import sequence_mean
      >>> v = jnp.array([[1.0, 3.0, 9.0], [4.0, 9.0, 9.0]])
      >>> m = jnp.array([[1, 1, 0], [1, 0, 0]])
      >>> float(sequence_mean(v, m))  # (2 + 4) / 2
      3.0
    """
    _check(values, mask, "sequence_mean")
    masked, weights = _masked(values, mask)
    per_seq_sum = jnp.sum(masked, axis=-1)
    per_seq_count = jnp.sum(weights, axis=-1)
    has_tokens = per_seq_count > 0
    per_seq_mean = jnp.where(has_tokens, per_seq_sum / jnp.where(has_tokens, per_seq_count, 1.0), 0.0)
    count = jnp.sum(has_tokens.astype(jnp.float32)) if normalizer is None else jnp.asarray(normalizer, jnp.float32)
    return jnp.where(count > 0, jnp.sum(per_seq_mean) / jnp.where(count > 0, count, 1.0), 0.0)


# Reductions selectable by name in configs.
REDUCTIONS = {"token": token_mean, "sequence": sequence_mean}


def get_reduction(name: str):
    """Returns the reduction registered under ``name`` ('token' or 'sequence')."""
    try:
        return REDUCTIONS[name]
    except KeyError:
        raise ValueError(f"Unknown reduction {name!r}; choose one of {sorted(REDUCTIONS)}.") from None
