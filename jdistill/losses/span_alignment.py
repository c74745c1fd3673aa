r"""Exact token alignment (ETA) across vocabularies: span merges and GOLD's hybrid distance.

As TRL's GOLD trainer computes it (``trl/experimental/gold/gold_trainer.py``,
class ``ULDLoss``, commit ``f2cd577``, with ``use_extended_uld=True`` and
``uld_use_hybrid_loss=True``). Both tokenizations of a response are cut into
*spans*, the smallest groups of consecutive tokens on each side that cover the
same characters (host-side work: :func:`jdistill.data.alignment_offsets.eta_extras`).
The *matched vocabulary* is the set of pairs ``(a_k, b_k)``, ``k = 1..K``, of a
student and a teacher entry with the same form; every other entry is *unmatched*
(``U_s``, ``U_t``).

**Span merges** (:func:`merge_spans`; GOLD's
``_merge_probabilities_with_alignment_groups``). A span with positions
``i_1 < … < i_n``, distributions ``q_i`` and actual tokens ``y_i``:

* ``'chain_rule'`` (GOLD's ``'bayesian'``): ``q̃(v) = q_{i_n}(v) · Π_{r<n} q_{i_r}(y_{i_r})``,
  the joint probability of the span's tokens with ``v`` last
  (:func:`segment_chain_rule`, ``base='last'``);
* ``'observed'`` (GOLD's ``'observed'`` formula): ``q̃(v) = q_{i_1}(v) · Π_{r>1} q_{i_r}(y_{i_r})``
  (:func:`segment_chain_rule`, ``base='first'``);
* ``'mean'``: ``q̄ = mean_r q_{i_r}`` (:func:`segment_log_mean_exp`).

Merged vectors are unnormalised (a one-token span keeps its distribution) and
everything is in log space.

**Distances** between a merged student vector ``q`` and teacher vector ``p``:

* :func:`gold_distance` (GOLD's ``_compute_hybrid_uld_loss``): the matched entries
  by the generalized JSD, as they are; the unmatched ones by ULD; weighted by
  the share of matched teacher entries:

  .. math:: w\, D_\beta\big(p|_B \,\|\, q|_A\big)
            + (1 - w) \sum_r \big|\mathrm{sort}↓(q|_{U_s})_r - \mathrm{sort}↓(p|_{U_t})_r\big|,
            \qquad w = K / V_t

* :func:`bucket_distance`: a divergence between the coarse distributions over the
  ``K`` matched entries plus one bucket of all unmatched mass, plus the same ULD
  term, unweighted.

With every entry matched and one-token spans both reduce to a same-vocabulary
divergence (``D_β(p ‖ q)``, resp. ``D(p ‖ q)``); with nothing matched, to ULD
(:func:`jdistill.losses.uld_distance`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jdistill.losses import explicit_axes
from jdistill.losses.divergences import forward_kl, generalized_jsd_of_log_probs
from jdistill.losses.uld import sorted_l1_distance

Array = jax.Array

SPAN_MERGES = ("chain_rule", "observed", "mean")


def segment_log_mean_exp(log_probs_TxV: Array, segment_T: Array, num_segments: int) -> Array:
    r"""``log(mean over the rows of each segment of exp(log_probs))``, stably.

    .. math:: \mathrm{out}_{g} = \log \frac{1}{|G_g|} \sum_{t∈G_g} e^{x_t}
              = m_g + \log \frac{1}{|G_g|} \sum_{t∈G_g} e^{x_t - m_g}, \quad m_g = \max_{t∈G_g} x_t

    The ``'mean'`` span merge (jdistill's merge before it followed GOLD).

    Args:
      log_probs_TxV: ``[T, V]`` finite log-probabilities.
      segment_T: ``[T]`` int segment of each row, in ``[0, num_segments)``.
      num_segments: static number of segments.

    Returns:
      ``[num_segments, V]`` float32; an empty segment gives zeros (callers mask it).

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import segment_log_mean_exp
      >>> x = jnp.log(jnp.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]]))
      >>> [[round(float(v), 3) for v in row] for row in jnp.exp(segment_log_mean_exp(x, jnp.array([0, 0, 1]), 3))]
      [[0.4, 0.6], [0.5, 0.5], [1.0, 1.0]]
    """
    x = log_probs_TxV.astype(jnp.float32)
    segment = functools.partial(explicit_axes.segment_reduce, segment_ids=segment_T, num_segments=num_segments)
    peak = jax.lax.stop_gradient(segment(jax.ops.segment_max, x))  # shift only: exact
    peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
    total = segment(jax.ops.segment_sum, jnp.exp(x - explicit_axes.gather_rows(peak, segment_T)))
    count = segment(jax.ops.segment_sum, jnp.ones_like(segment_T, jnp.float32))[:, None]
    has_rows = count > 0
    safe_total = jnp.where(has_rows, total, 1.0)
    return jnp.where(has_rows, jnp.log(safe_total) + peak - jnp.log(jnp.maximum(count, 1.0)), 0.0)


def segment_chain_rule(log_probs_TxV: Array, target_log_probs_T: Array, segment_T: Array, num_segments: int, *,
                       base: str) -> Array:
    r"""GOLD's span merge: one row's full distribution times the other rows' actual-token probabilities.

    For a segment with rows ``t_1 < … < t_n`` and ``x_t = log_probs[t]``,
    ``c_t = target_log_probs[t]`` (the log-probability of the token actually
    generated at row ``t``):

    .. math:: \mathrm{out}_g = x_{t_b} + \sum_{r ≠ b} c_{t_r}, \qquad
              b = n \ (\text{base}=\text{'last'}), \quad b = 1 \ (\text{base}=\text{'first'})

    (GOLD's ``_merge_probabilities_with_alignment_groups``: ``'last'`` is its
    ``uld_token_merge_strategy='bayesian'``, ``'first'`` its ``'observed'``.)

    Args:
      log_probs_TxV: ``[T, V]`` finite log-probabilities.
      target_log_probs_T: ``[T]`` log-probability of each row's actual next token.
      segment_T: ``[T]`` int segment of each row, in ``[0, num_segments)``.
      num_segments: static number of segments.
      base: ``'last'`` (the chain rule) or ``'first'`` (GOLD's ``'observed'``).

    Returns:
      ``[num_segments, V]`` float32 unnormalised log-probabilities; an empty
      segment gives row 0 or row ``T-1`` (finite; callers mask it).

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import segment_chain_rule
      >>> x = jnp.log(jnp.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]]))  # row 0's token was 0, row 1's token 1
      >>> c = jnp.log(jnp.array([0.6, 0.5]))
      >>> merged = segment_chain_rule(x, c, jnp.array([0, 0]), 1, base='last')
      >>> [round(float(v), 3) for v in jnp.exp(merged[0])]  # 0.6 × (0.2, 0.5, 0.3)
      [0.12, 0.3, 0.18]
    """
    if base not in ("last", "first"):
        raise ValueError(f"segment_chain_rule: base must be 'last' or 'first', got {base!r}.")
    length = log_probs_TxV.shape[0]
    segment = functools.partial(explicit_axes.segment_reduce, segment_ids=segment_T, num_segments=num_segments)
    row_T = jnp.arange(length)
    pick_G = segment(jax.ops.segment_max if base == "last" else jax.ops.segment_min, row_T)
    pick_G = jnp.clip(pick_G, 0, length - 1)  # empty segments: any finite row
    is_base_T = explicit_axes.gather_rows(pick_G, segment_T) == row_T
    others_G = segment(jax.ops.segment_sum, jnp.where(is_base_T, 0.0, target_log_probs_T.astype(jnp.float32)))
    return explicit_axes.gather_rows(log_probs_TxV.astype(jnp.float32), pick_G) + others_G[:, None]


def merge_spans(log_probs_BxTxV: Array, targets_BxT: Array, segment_BxT: Array, num_segments: int,
                how: str) -> Array:
    r"""The merged log-probabilities of every span, per batch row.

    .. math:: \tilde q_g(v) = q_{t_n}(v) \prod_{r<n} q_{t_r}(y_{t_r}) \ (\text{'chain\_rule'}), \quad
              q_{t_1}(v) \prod_{r>1} q_{t_r}(y_{t_r}) \ (\text{'observed'}), \quad
              \frac{1}{n} \sum_r q_{t_r}(v) \ (\text{'mean'})

    over the rows ``t_1 < … < t_n`` of segment ``g`` (:func:`segment_chain_rule`,
    :func:`segment_log_mean_exp`), in log space; GOLD's
    ``_merge_probabilities_with_alignment_groups``.

    Args:
      log_probs_BxTxV: ``[B, T, V]`` finite log-probabilities (row ``t`` predicts token ``y_t``).
      targets_BxT: ``[B, T]`` int, the token ``y_t`` actually generated at each row.
      segment_BxT: ``[B, T]`` int span of each row, in ``[0, num_segments)``.
      num_segments: static number of spans (an extra one can collect the rows to ignore).
      how: one of :data:`SPAN_MERGES`: ``'chain_rule'``, ``'observed'``, ``'mean'``.

    Returns:
      ``[B, num_segments, V]`` float32 unnormalised log-probabilities (finite for
      an empty span; callers mask it).

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import merge_spans
      >>> x = jnp.log(jnp.array([[[0.6, 0.4], [0.2, 0.8], [0.5, 0.5]]]))  # rows 0, 1 form span 0
      >>> y, g = jnp.array([[0, 1, 0]]), jnp.array([[0, 0, 1]])
      >>> [round(float(v), 3) for v in jnp.exp(merge_spans(x, y, g, 2, 'chain_rule'))[0, 0]]  # 0.6 × (.2, .8)
      [0.12, 0.48]
      >>> [round(float(v), 3) for v in jnp.exp(merge_spans(x, y, g, 2, 'mean'))[0, 0]]
      [0.4, 0.6]
    """
    if how not in SPAN_MERGES:
        raise ValueError(f"merge_spans: how must be one of {SPAN_MERGES}, got {how!r}.")
    if how == "mean":
        return jax.vmap(segment_log_mean_exp, in_axes=(0, 0, None))(log_probs_BxTxV, segment_BxT, num_segments)
    target_BxT = explicit_axes.take_along_axis(
        log_probs_BxTxV, targets_BxT[..., None], axis=-1, mode="clip"
    )[..., 0]
    base = "last" if how == "chain_rule" else "first"
    merge = jax.vmap(lambda x, c, g: segment_chain_rule(x, c, g, num_segments, base=base))
    return merge(log_probs_BxTxV, target_BxT, segment_BxT)


def teacher_segments(span_BxS: Array, start_BxS: Array, end_BxS: Array, valid_BxS: Array, teacher_length: int,
                     dump: int) -> Array:
    """The span of every teacher position, from each student position's teacher range ``[start, end)``.

    Student position ``i`` of span ``s_i`` names the teacher positions
    ``[start_i, end_i)`` that predict the same span's teacher tokens; teacher
    position ``j`` takes the span whose range holds it (among valid student
    positions), else ``dump``.

    Args:
      span_BxS: ``[B, S]`` int span of each student position.
      start_BxS: ``[B, S]`` int first teacher position of that span.
      end_BxS: ``[B, S]`` int end (exclusive) of its teacher positions.
      valid_BxS: ``[B, S]`` bool, the student positions to use.
      teacher_length: static number of teacher positions ``T``.
      dump: the segment of teacher positions in no span.

    Returns:
      ``[B, teacher_length]`` int32.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import teacher_segments
      >>> span, start, end = jnp.array([[0, 1, 1]]), jnp.array([[0, 1, 1]]), jnp.array([[1, 3, 3]])
      >>> teacher_segments(span, start, end, jnp.array([[True, True, True]]), 4, dump=9).tolist()
      [[0, 1, 1, 9]]
    """
    j_T = jnp.arange(teacher_length)
    inside_BxSxT = (
        valid_BxS[:, :, None] & (start_BxS[:, :, None] <= j_T) & (j_T < end_BxS[:, :, None])
    )
    span_BxT = jnp.max(jnp.where(inside_BxSxT, span_BxS[:, :, None], -1), axis=1)
    return jnp.where(span_BxT >= 0, span_BxT, dump)


def unmatched_ids(size: int, matched_ids: np.ndarray) -> np.ndarray:
    """The ids in ``[0, size)`` that are not in ``matched_ids`` (numpy int, increasing).

    Host-side (numpy, static): the unmatched part ``U`` of a vocabulary of ``size`` entries.

    Example:
      >>> import numpy as np
      >>> from jdistill.losses import unmatched_ids
      >>> unmatched_ids(5, np.array([3, 0])).tolist()
      [1, 2, 4]
    """
    mask = np.ones(size, bool)
    mask[np.asarray(matched_ids, int)] = False
    return np.flatnonzero(mask)


def _entries(x: Array, ids: np.ndarray) -> Array:
    """``x[..., ids]`` for static ids (under Explicit axes, replicated along the picked entries)."""
    return explicit_axes.take(x, ids, axis=-1)


def gold_distance(student_log_probs_BxGxVs: Array, teacher_log_probs_BxGxVt: Array, matched_student_K,
                  matched_teacher_K, *, beta) -> Array:
    r"""GOLD's hybrid distance between merged distributions over two vocabularies.

    .. math:: w\, D_\beta(p|_B \,\|\, q|_A) + (1 - w)\, \mathrm{ULD}(q|_{U_s}, p|_{U_t}), \qquad w = K / V_t

    ``D_β`` is GKD's generalized JSD (:func:`jdistill.losses.generalized_jsd_of_log_probs`)
    on the matched sub-vectors as they are (not renormalised); the ULD term
    (:func:`jdistill.losses.sorted_l1_distance`) is 0 when one side has no
    unmatched entry. TRL GOLD's ``_compute_hybrid_uld_loss`` (``gold_trainer.py``,
    commit ``f2cd577``, lines 623-720).

    Args:
      student_log_probs_BxGxVs: ``[..., V_s]`` student log-probabilities (finite, any total mass).
      teacher_log_probs_BxGxVt: ``[..., V_t]`` teacher log-probabilities (finite, any total mass).
      matched_student_K: ``[K]`` numpy int, student ids of the matched pairs.
      matched_teacher_K: ``[K]`` numpy int, teacher ids of the same pairs.
      beta: Python number in ``[0, 1]``, β of the generalized JSD (0 = forward KL).

    Returns:
      ``[...]`` float32.

    Example:
      >>> import jax.numpy as jnp, numpy as np
      >>> from jdistill.losses import gold_distance
      >>> q = jnp.log(jnp.array([0.5, 0.3, 0.2]))  # student: entries 0, 1 matched, 2 not
      >>> p = jnp.log(jnp.array([0.3, 0.5, 0.1, 0.1]))  # teacher: entries 1, 0 matched, 2, 3 not
      >>> # w = 2/4; the matched entries agree (D = 0), then |.2 - .1| + |0 - .1| over the sorted rest
      >>> round(float(gold_distance(q, p, np.array([0, 1]), np.array([1, 0]), beta=0.5)), 4)
      0.1
    """
    lq = student_log_probs_BxGxVs.astype(jnp.float32)
    lp = teacher_log_probs_BxGxVt.astype(jnp.float32)
    a, b = np.asarray(matched_student_K, int), np.asarray(matched_teacher_K, int)
    weight = len(b) / lp.shape[-1]
    value = jnp.zeros(lq.shape[:-1], jnp.float32)
    if len(b):
        matched = generalized_jsd_of_log_probs(_entries(lq, a), _entries(lp, b), beta=beta)
        value = value + weight * matched
    rest_s, rest_t = unmatched_ids(lq.shape[-1], a), unmatched_ids(lp.shape[-1], b)
    if len(rest_s) and len(rest_t):  # GOLD: no ULD term when one side has no unmatched entry
        rest = sorted_l1_distance(jnp.exp(_entries(lq, rest_s)), jnp.exp(_entries(lp, rest_t)))
        value = value + (1.0 - weight) * rest
    return value


def bucket_distance(student_log_probs_BxGxVs: Array, teacher_log_probs_BxGxVt: Array, matched_student_K,
                    matched_teacher_K, divergence=forward_kl) -> Array:
    r"""jdistill's earlier ETA distance: the matched entries plus one bucket, and ULD on the rest.

    .. math:: D(\hat p \,\|\, \hat q) + \sum_r \big|\mathrm{sort}↓(q|_{U_s})_r - \mathrm{sort}↓(p|_{U_t})_r\big|

    with ``q̂ = (q(a_1), …, q(a_K), Σ_{v∈U_s} q(v))`` renormalised, ``p̂``
    likewise (no bucket when one side has no unmatched entry). Not GOLD's form
    (see :func:`gold_distance`); the two terms are added without weights.

    Args:
      student_log_probs_BxGxVs: ``[..., V_s]`` student log-probabilities (finite).
      teacher_log_probs_BxGxVt: ``[..., V_t]`` teacher log-probabilities (finite).
      matched_student_K: ``[K]`` numpy int, student ids of the matched pairs.
      matched_teacher_K: ``[K]`` numpy int, teacher ids of the same pairs.
      divergence: ``f(student_logits, teacher_logits, temperature=) -> [...]``, e.g.
        :func:`jdistill.losses.forward_kl` (the default) or any of ``DIVERGENCES``.

    Returns:
      ``[...]`` float32.

    Example:
      >>> import jax.numpy as jnp, numpy as np
      >>> from jdistill.losses import bucket_distance
      >>> q = jnp.log(jnp.array([0.5, 0.3, 0.2]))  # student: entries 0, 1 matched, 2 not
      >>> p = jnp.log(jnp.array([0.3, 0.5, 0.1, 0.1]))  # teacher: entries 1, 0 matched, 2, 3 not
      >>> # KL((.5, .3, .2) | (.5, .3, .2)) = 0, then |.2 - .1| + |0 - .1| over the sorted rest
      >>> round(float(bucket_distance(q, p, np.array([0, 1]), np.array([1, 0]))), 4)
      0.2
    """
    lq, lp = student_log_probs_BxGxVs.astype(jnp.float32), teacher_log_probs_BxGxVt.astype(jnp.float32)
    a, b = np.asarray(matched_student_K, int), np.asarray(matched_teacher_K, int)
    rest_s, rest_t = unmatched_ids(lq.shape[-1], a), unmatched_ids(lp.shape[-1], b)
    coarse_q, coarse_p = [_entries(lq, a)], [_entries(lp, b)]
    if len(rest_s) and len(rest_t):  # else the matched entries hold all of one side's mass: no bucket
        coarse_q.append(jax.nn.logsumexp(_entries(lq, rest_s), axis=-1, keepdims=True))
        coarse_p.append(jax.nn.logsumexp(_entries(lp, rest_t), axis=-1, keepdims=True))
    matched = divergence(jnp.concatenate(coarse_q, -1), jnp.concatenate(coarse_p, -1), temperature=1.0)
    fallback = sorted_l1_distance(jnp.exp(_entries(lq, rest_s)), jnp.exp(_entries(lp, rest_t)))
    return matched + fallback
