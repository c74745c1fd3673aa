"""Logit filters for sampling: temperature, top-k, top-p (nucleus) and min-p.

Every filter is a pure function of ``logits_BxV`` (any float dtype; computed
in float32) that returns float32 logits in which the excluded tokens are
``-inf``. Filters compose left to right in the order :func:`filter_logits`
applies them (the Hugging Face order): temperature, top-k, top-p, min-p, each
acting on the distribution the previous one left (so top-p renormalises over
the top-k survivors).

Ties: every filter keeps *all* tokens whose logit equals the last kept logit
(a threshold rule, as in Hugging Face's warpers), so top-k may keep more than
``k`` tokens and top-p more than the minimal set when logits tie exactly. The
top token is always kept.

No filter sorts the vocabulary (slow on CPU): small vocabularies compare all
pairs of tokens, larger ones bisect over the float32 bit patterns; both are
exact and keep the same sets.
"""

import dataclasses

import jax
import jax.numpy as jnp

NEG_INF = float("-inf")


def apply_temperature(logits_BxV: jnp.ndarray, temperature) -> jnp.ndarray:
    """``logits / temperature`` in float32; ``temperature`` must be > 0."""
    return logits_BxV.astype(jnp.float32) / jnp.asarray(temperature, jnp.float32)


def keep_at_least(logits_BxV: jnp.ndarray, threshold_Bx1: jnp.ndarray) -> jnp.ndarray:
    """Sets logits strictly below ``threshold_Bx1`` to ``-inf``."""
    return jnp.where(logits_BxV < threshold_Bx1, NEG_INF, logits_BxV)


# ----------------------------------------------------------------------
# Thresholds without sorting: XLA's CPU sort (``jnp.sort``, and ``lax.top_k``,
# which lowers to a sort) costs ~0.3 ms per 256-entry row and ~10 ms per
# 50k-entry row, so the filters never sort. Small vocabularies compare every
# pair of tokens (one fused [B, V, V] reduction); larger ones find the cut by
# an exact 32-step bisection over the float32 bit patterns (one masked
# reduction over the vocabulary per step).

# Vocabularies up to this size use the pairwise comparison.
PAIRWISE_MAX_VOCAB = 256


def mass_above(logits_BxV: jnp.ndarray, weights_BxV: jnp.ndarray) -> jnp.ndarray:
    """``[B, V]``: for each token, the total weight of the strictly larger logits."""
    larger_BxVxV = logits_BxV[:, None, :] > logits_BxV[:, :, None]
    return jnp.sum(jnp.where(larger_BxVxV, weights_BxV[:, None, :], 0), axis=-1)


def ordered_keys(logits_BxV: jnp.ndarray) -> jnp.ndarray:
    """uint32 keys ordered like the float32 logits (``-inf`` smallest; no NaNs)."""
    bits = jax.lax.bitcast_convert_type(logits_BxV.astype(jnp.float32), jnp.uint32)
    negative = (bits >> 31) == 1
    return jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))


def largest_key_where(keys_BxV: jnp.ndarray, holds) -> jnp.ndarray:
    """``[B, 1]`` largest key ``t`` with ``holds(keys >= t)`` true, by bisection.

    ``holds`` maps a ``[B, V]`` bool mask to ``[B, 1]`` bools and must be
    monotone (true for a mask, true for any superset) and true for the full
    row. The answer is a key present in the row.
    """
    lo_Bx1 = jnp.zeros(keys_BxV.shape[:-1] + (1,), jnp.uint32)  # holds(all) is true
    hi_Bx1 = jnp.max(keys_BxV, axis=-1, keepdims=True) + 1  # holds(nothing) is false

    def halve(_, bounds):
        lo_Bx1, hi_Bx1 = bounds
        mid_Bx1 = lo_Bx1 + (hi_Bx1 - lo_Bx1) // 2
        ok_Bx1 = holds(keys_BxV >= mid_Bx1)
        return jnp.where(ok_Bx1, mid_Bx1, lo_Bx1), jnp.where(ok_Bx1, hi_Bx1, mid_Bx1)

    return jax.lax.fori_loop(0, 32, halve, (lo_Bx1, hi_Bx1))[0]


def top_k_filter(logits_BxV: jnp.ndarray, k: int) -> jnp.ndarray:
    """Keeps the ``k`` largest logits of each row (ties with the k-th kept).

    A token is kept when fewer than ``k`` logits are strictly larger.

    Args:
        logits_BxV: logits of any float dtype.
        k: a static Python int; ``k <= 0`` or ``k >= V`` keeps everything.
    """
    logits_BxV = logits_BxV.astype(jnp.float32)
    if k <= 0 or k >= logits_BxV.shape[-1]:
        return logits_BxV
    if logits_BxV.shape[-1] <= PAIRWISE_MAX_VOCAB:
        larger_BxV = mass_above(logits_BxV, jnp.ones(logits_BxV.shape, jnp.int32))
        return jnp.where(larger_BxV < k, logits_BxV, NEG_INF)
    keys_BxV = ordered_keys(logits_BxV)
    kth_key_Bx1 = largest_key_where(
        keys_BxV, lambda kept_BxV: jnp.sum(kept_BxV, axis=-1, keepdims=True, dtype=jnp.int32) >= k
    )
    return jnp.where(keys_BxV >= kth_key_Bx1, logits_BxV, NEG_INF)


def top_p_filter(logits_BxV: jnp.ndarray, top_p) -> jnp.ndarray:
    """Nucleus filter: keeps the smallest top set with probability ``>= top_p``.

    A token is kept when the probability of all strictly more likely tokens
    is ``< top_p``; so the most likely token is always kept, ``top_p >= 1``
    keeps every token of non-zero probability, and tokens tied with the last
    kept one are kept too.

    Args:
        logits_BxV: logits of any float dtype (``-inf`` entries allowed).
        top_p: scalar or ``[B]`` in ``(0, 1]``; may be traced.
    """
    logits_BxV = logits_BxV.astype(jnp.float32)
    top_p_Bx1 = jnp.reshape(jnp.asarray(top_p, jnp.float32), (-1, 1))
    probs_BxV = jax.nn.softmax(logits_BxV, axis=-1)
    if logits_BxV.shape[-1] <= PAIRWISE_MAX_VOCAB:
        return jnp.where(mass_above(logits_BxV, probs_BxV) < top_p_Bx1, logits_BxV, NEG_INF)
    # The cut is the largest logit whose at-least-as-likely tokens reach top_p.
    keys_BxV = ordered_keys(logits_BxV)
    cut_key_Bx1 = largest_key_where(
        keys_BxV,
        lambda kept_BxV: jnp.sum(jnp.where(kept_BxV, probs_BxV, 0.0), axis=-1, keepdims=True)
        >= top_p_Bx1,
    )
    # If rounding leaves the total mass below top_p, the cut is key 0: keep all.
    return jnp.where(keys_BxV >= cut_key_Bx1, logits_BxV, NEG_INF)


def min_p_filter(logits_BxV: jnp.ndarray, min_p) -> jnp.ndarray:
    """Drops tokens whose probability is below ``min_p`` times the top probability.

    ``p_i < min_p * p_max`` is ``logit_i < logit_max + log(min_p)``, so no
    softmax is needed. ``min_p <= 0`` keeps everything; the top token is always
    kept.

    Args:
        logits_BxV: logits of any float dtype.
        min_p: scalar or ``[B]`` in ``[0, 1]``; may be traced.
    """
    logits_BxV = logits_BxV.astype(jnp.float32)
    max_Bx1 = jnp.max(logits_BxV, axis=-1, keepdims=True)
    min_p_Bx1 = jnp.reshape(jnp.asarray(min_p, jnp.float32), (-1, 1))
    threshold_Bx1 = jnp.minimum(max_Bx1 + jnp.log(min_p_Bx1), max_Bx1)
    return keep_at_least(logits_BxV, threshold_Bx1)


@dataclasses.dataclass(frozen=True)
class FilterFlags:
    """Which filters run: the static (compile-time) part of the sampling settings.

    Numeric values (temperature, top-p, min-p) are traced so that changing them
    never recompiles; these flags decide the traced program's structure.

    Attributes:
        greedy: argmax decoding (temperature 0); every other field is ignored.
        top_k: keep the ``top_k`` largest logits; 0 disables (``lax.top_k``
            needs a static ``k``).
        use_top_p: run the nucleus filter (``top_p < 1``); the vocabulary sort
            it needs is skipped otherwise.
        use_min_p: run the min-p filter (``min_p > 0``).
    """

    greedy: bool = False
    top_k: int = 0
    use_top_p: bool = False
    use_min_p: bool = False

    @classmethod
    def from_settings(cls, *, temperature: float, top_k: int, top_p: float, min_p: float):
        """Flags for Python-number sampling settings (validated)."""
        temperature, top_p, min_p = float(temperature), float(top_p), float(min_p)
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if not 0.0 <= min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {min_p}")
        if int(top_k) != top_k or top_k < 0:
            raise ValueError(f"top_k must be a non-negative int (0 = off), got {top_k}")
        if temperature == 0.0:
            return cls(greedy=True)
        return cls(greedy=False, top_k=int(top_k), use_top_p=top_p < 1.0, use_min_p=min_p > 0.0)


def filter_logits(logits_BxV: jnp.ndarray, flags: FilterFlags, *, temperature, top_p, min_p):
    """Temperature, then top-k, top-p and min-p as ``flags`` says; float32 out.

    Args:
        logits_BxV: raw model logits.
        flags: static :class:`FilterFlags` (must not be greedy).
        temperature, top_p, min_p: scalars or ``[B]``; may be traced.

    Returns:
        ``[B, V]`` float32 logits of the sampling distribution (unnormalised;
        excluded tokens are ``-inf``).
    """
    logits_BxV = apply_temperature(logits_BxV, jnp.reshape(temperature, (-1, 1)))
    if flags.top_k:
        logits_BxV = top_k_filter(logits_BxV, flags.top_k)
    if flags.use_top_p:
        logits_BxV = top_p_filter(logits_BxV, top_p)
    if flags.use_min_p:
        logits_BxV = min_p_filter(logits_BxV, min_p)
    return logits_BxV
