r"""Forward KL against sparse (top-k) teacher targets stored offline.

A teacher too large to sit beside the student is run once, ahead of training,
and only its ``k`` most likely next tokens per position are kept: their ids
``K = {v_1..v_k}`` and log-probabilities ``log p_{v_i}``. The loss compares the
two distributions coarsened to ``k + 1`` outcomes, the ``k`` stored tokens and
one bucket for all the remaining mass:

.. math::

    p_{\mathrm{rest}} = 1 - \sum_{v \in K} p_v, \qquad
    q_{\mathrm{rest}} = \sum_{v \notin K} q_v, \qquad
    D = \sum_{v \in K} p_v (\log p_v - \log q_v) + p_{\mathrm{rest}} (\log p_{\mathrm{rest}} - \log q_{\mathrm{rest}})

with ``q = softmax(z_s)`` over the full vocabulary (``q_rest`` is a masked
log-sum-exp of the student's logits, exact even when the top-k mass is close to
1). With ``k = V`` there is no rest and ``D`` is the dense forward KL; for any
``k`` it is a lower bound of it (coarsening never increases a KL).

Stored log-probabilities are usually rounded, so ``Σ p_v`` may exceed 1 by a
hair: the top-k probabilities are then rescaled to sum to 1 and the rest is 0.
A rest bucket is ignored where the ``k`` ids already cover the whole vocabulary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jdistill.losses import distributions as dist
from jdistill.losses import explicit_axes

Array = jax.Array


def _outside_topk_mask(topk_ids_NxK: Array, log_q_NxV: Array) -> Array:
    """``[N, V]`` True where a vocabulary id is *not* among the row's top-k ids (a scatter, not ``[N, K, V]``),
    sharded like ``log_q_NxV``."""
    inside = explicit_axes.set_along_last_axis(log_q_NxV.shape, bool, topk_ids_NxK, True, log_q_NxV)
    return ~inside


def sparse_forward_kl(student_logits: Array, topk_ids: Array, topk_logprobs: Array) -> Array:
    r"""Forward KL from stored top-k teacher log-probabilities plus a remaining-mass bucket.

    .. math:: D = \sum_{v \in K} p_v \log\frac{p_v}{q_v} + p_{\mathrm{rest}} \log\frac{p_{\mathrm{rest}}}{q_{\mathrm{rest}}}

    Args:
      student_logits: ``[..., V]`` student logits (any float dtype; float32 inside).
      topk_ids: ``[..., k]`` integer ids of the teacher's ``k`` most likely tokens
        (distinct within a row).
      topk_logprobs: ``[..., k]`` the teacher's log-probabilities of those ids
        (from its full softmax; ``-inf`` allowed).

    Returns:
      ``[...]`` float32 per-token divergences (reduce with :func:`jdistill.losses.token_mean`).

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import sparse_forward_kl
      >>> s = jnp.log(jnp.array([0.25, 0.25, 0.25, 0.25]))
      >>> ids = jnp.array([0])
      >>> lp = jnp.log(jnp.array([0.5]))  # teacher: p_0 = 0.5, rest 0.5
      >>> round(float(sparse_forward_kl(s, ids, lp)), 4)  # 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75)
      0.1438
    """
    if not jnp.issubdtype(jnp.result_type(topk_ids), jnp.integer):
        raise TypeError(f"sparse_forward_kl: topk_ids must be integer token ids, got {jnp.result_type(topk_ids)}.")
    if jnp.shape(topk_ids) != jnp.shape(topk_logprobs):
        raise ValueError(
            f"sparse_forward_kl: topk_ids {jnp.shape(topk_ids)} and topk_logprobs {jnp.shape(topk_logprobs)} "
            "must have the same shape."
        )
    if jnp.shape(topk_ids)[:-1] != jnp.shape(student_logits)[:-1]:
        raise ValueError(
            f"sparse_forward_kl: topk_ids {jnp.shape(topk_ids)} must match student_logits "
            f"{jnp.shape(student_logits)} on every axis but the last."
        )
    vocab, k = student_logits.shape[-1], topk_ids.shape[-1]
    lead = student_logits.shape[:-1]
    log_q_NxV = dist.log_probs(student_logits.reshape(-1, vocab))
    ids_NxK = topk_ids.reshape(-1, k).astype(jnp.int32)
    log_p_NxK = topk_logprobs.reshape(-1, k).astype(jnp.float32)

    # Teacher: the top-k mass (rescaled if rounding pushed it above 1) and the rest.
    p_NxK = jnp.exp(log_p_NxK)
    total_N = jnp.sum(p_NxK, axis=-1)
    log_p_NxK = log_p_NxK - jnp.log(jnp.maximum(total_N, 1.0))[:, None]
    p_NxK = jnp.exp(log_p_NxK)
    p_rest_N = jnp.clip(1.0 - total_N, 0.0, 1.0)

    # Student: the probabilities of the stored ids, and its mass outside them.
    log_q_NxK = explicit_axes.take_along_axis(log_q_NxV, ids_NxK, axis=-1)
    outside_NxV = _outside_topk_mask(ids_NxK, log_q_NxV)
    outside_NxV = outside_NxV & (log_q_NxV > -jnp.inf)  # entries the student can put mass on
    has_rest_N = jnp.any(outside_NxV, axis=-1)
    # Rows with nothing outside become zeros (finite gradients) and are dropped below.
    rest_logits_NxV = jnp.where(has_rest_N[:, None], jnp.where(outside_NxV, log_q_NxV, -jnp.inf), 0.0)
    log_q_rest_N = jax.nn.logsumexp(rest_logits_NxV, axis=-1)

    topk_term_N = dist.kl_from_log_probs(jnp.where(p_NxK > 0, log_p_NxK, -jnp.inf), log_q_NxK)
    use_rest_N = has_rest_N & (p_rest_N > 0)
    safe_p_rest_N = jnp.where(use_rest_N, p_rest_N, 1.0)
    safe_log_q_rest_N = jnp.where(use_rest_N, log_q_rest_N, 0.0)
    rest_term_N = jnp.where(use_rest_N, safe_p_rest_N * (jnp.log(safe_p_rest_N) - safe_log_q_rest_N), 0.0)
    return (topk_term_N + rest_term_N).reshape(lead)
