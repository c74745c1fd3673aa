r"""Exact token alignment (ETA) across vocabularies, as TRL's GOLD computes it, with a ULD fallback.

On the host (:func:`jdistill.data.alignment_offsets.eta_extras`): both
tokenizations of the response are cut into *spans*, the smallest groups of
consecutive tokens on each side that cover the same characters (by the fast
tokenizers' character offsets; each side's EOS is a span of its own). The
*matched vocabulary* is the set of pairs ``(a_k, b_k)``, ``k = 1..K``, of a
student and a teacher entry with the same normalised form
(:func:`jdistill.data.alignment_vocab.matched_vocabulary`); every other entry
is *unmatched* (``U_s``, ``U_t``).

In the step, span ``s`` has student positions ``i_1 < … < i_n`` and teacher
positions ``j_1 < … < j_m`` (the positions predicting its tokens ``y``), with
``q_i = softmax(z^s_i/τ)`` and ``p_j = softmax(z^t_j/τ)``.

**Span merge** (``method.eta_span_merge``; GOLD's ``_merge_probabilities_with_alignment_groups``):

* ``'chain_rule'`` (default; GOLD's ``uld_token_merge_strategy='bayesian'``): the last
  position's full distribution times the probabilities of the span's earlier
  tokens actually generated, ``q̃_s(v) = q_{i_n}(v) · Π_{r<n} q_{i_r}(y_{i_r})``,
  i.e. the joint probability of the span's tokens with ``v`` last;
* ``'observed'`` (GOLD's ``'observed'`` formula): the first position's distribution
  times the probabilities of the later tokens, ``q̃_s(v) = q_{i_1}(v) · Π_{r>1} q_{i_r}(y_{i_r})``;
* ``'mean'`` (jdistill before it followed GOLD): ``q̄_s = mean_r q_{i_r}``.

``p̃_s`` likewise. Merged vectors are unnormalised (a span of one token keeps
its distribution); everything is computed in log space.

**Distance** (``method.eta_matched_loss``):

* ``'gold'`` (default; GOLD's hybrid loss, ``_compute_hybrid_uld_loss``): the
  matched entries are compared directly by the generalized JSD of
  ``method.jsd_beta`` on the matched sub-vectors as they are (not
  renormalised; :func:`jdistill.losses.generalized_jsd_of_log_probs`), the
  unmatched ones by ULD, weighted by the share of matched teacher entries:

  .. math:: \mathrm{ETA}_s = w\, D_\beta\big(p̃_s|_B \,\|\, q̃_s|_A\big)
            + (1 - w) \sum_r \big|\mathrm{sort}↓(q̃_s|_{U_s})_r - \mathrm{sort}↓(p̃_s|_{U_t})_r\big|,
            \qquad w = K / V_t

  (the shorter sorted vector zero-padded; the ULD term is 0 when one side has
  no unmatched entry, as in GOLD);
* ``'bucket'`` (jdistill's earlier form): ``D(p̂_s ‖ q̂_s)`` with
  ``method.divergence`` between the coarse distributions over the ``K``
  matched entries plus one bucket of all unmatched mass (renormalised), plus
  the same ULD term, unweighted.

Each student response token contributes its span's value (a span of ``n``
student tokens counts ``n`` times; spans cut by truncation count 0):
``L = (1 - kd_rate) · CE(z_s, y) + kd_rate · Σ_i M_i ETA_{s(i)} / N``.

Limits. With one tokenizer on both sides every span is one token, every entry
is matched (``w = 1``) and ``ETA`` is exactly ``D_β(p ‖ q)``: GKD's
generalized JSD (forward KL at ``jsd_beta = 0``); with ``'bucket'`` it is
``D(p ‖ q)``. With no matched entry (``w = 0``) it is ULD between the merged
distributions.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jdistill import console, losses
from jdistill.data import alignment_mined, alignment_offsets, alignment_vocab
from jdistill.methods import terms
from jdistill.methods.base import Method, ModelFacts
from jdistill.methods.host_constants import HostConstants
from jdistill.methods.settings import KDSettings, check_choice, setting
from jdistill.methods.uld import pad_vocab

SPAN_MERGES = ("chain_rule", "observed", "mean")
MATCHED_LOSSES = ("gold", "bucket")


def segment_log_mean_exp(log_probs_TxV, segment_T, num_segments):
    r"""``log(mean over the rows of each segment of exp(log_probs))``, stably.

    .. math:: \mathrm{out}_{g} = \log \frac{1}{|G_g|} \sum_{t∈G_g} e^{x_t}
              = m_g + \log \frac{1}{|G_g|} \sum_{t∈G_g} e^{x_t - m_g}, \quad m_g = \max_{t∈G_g} x_t

    Args:
      log_probs_TxV: ``[T, V]`` finite log-probabilities.
      segment_T: ``[T]`` int segment of each row, in ``[0, num_segments)``.
      num_segments: static number of segments.

    Returns:
      ``[num_segments, V]`` float32; an empty segment gives zeros (callers mask it).

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.log(jnp.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]]))
      >>> [[round(float(v), 3) for v in row] for row in jnp.exp(segment_log_mean_exp(x, jnp.array([0, 0, 1]), 3))]
      [[0.4, 0.6], [0.5, 0.5], [1.0, 1.0]]
    """
    x = log_probs_TxV.astype(jnp.float32)
    peak = jax.lax.stop_gradient(jax.ops.segment_max(x, segment_T, num_segments))  # shift only: exact
    peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
    total = jax.ops.segment_sum(jnp.exp(x - peak[segment_T]), segment_T, num_segments)
    count = jax.ops.segment_sum(jnp.ones_like(segment_T, jnp.float32), segment_T, num_segments)[:, None]
    has_rows = count > 0
    safe_total = jnp.where(has_rows, total, 1.0)
    return jnp.where(has_rows, jnp.log(safe_total) + peak - jnp.log(jnp.maximum(count, 1.0)), 0.0)


def segment_chain_rule(log_probs_TxV, target_log_probs_T, segment_T, num_segments, *, base):
    r"""GOLD's span merge: one row's full distribution times the other rows' actual-token probabilities.

    For a segment with rows ``t_1 < … < t_n`` and ``x_t = log_probs[t]``,
    ``c_t = target_log_probs[t]`` (the log-probability of the token actually
    generated at row ``t``):

    .. math:: \mathrm{out}_g = x_{t_b} + \sum_{r ≠ b} c_{t_r}, \qquad
              b = n \ (\text{base}=\text{'last'}), \quad b = 1 \ (\text{base}=\text{'first'})

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
      >>> x = jnp.log(jnp.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]]))  # row 0's token was 0, row 1's token 1
      >>> c = jnp.log(jnp.array([0.6, 0.5]))
      >>> merged = segment_chain_rule(x, c, jnp.array([0, 0]), 1, base='last')
      >>> [round(float(v), 3) for v in jnp.exp(merged[0])]  # 0.6 × (0.2, 0.5, 0.3)
      [0.12, 0.3, 0.18]
    """
    if base not in ("last", "first"):
        raise ValueError(f"segment_chain_rule: base must be 'last' or 'first', got {base!r}.")
    length = log_probs_TxV.shape[0]
    row_T = jnp.arange(length)
    if base == "last":
        pick_G = jax.ops.segment_max(row_T, segment_T, num_segments)
    else:
        pick_G = jax.ops.segment_min(row_T, segment_T, num_segments)
    pick_G = jnp.clip(pick_G, 0, length - 1)  # empty segments: any finite row
    is_base_T = pick_G[segment_T] == row_T
    others_G = jax.ops.segment_sum(
        jnp.where(is_base_T, 0.0, target_log_probs_T.astype(jnp.float32)), segment_T, num_segments
    )
    return log_probs_TxV.astype(jnp.float32)[pick_G] + others_G[:, None]


def merge_spans(log_probs_BxTxV, targets_BxT, segment_BxT, num_segments, how):
    """``[B, num_segments, V]`` merged log-probabilities of every span (``how`` in :data:`SPAN_MERGES`)."""
    if how == "mean":
        return jax.vmap(segment_log_mean_exp, in_axes=(0, 0, None))(log_probs_BxTxV, segment_BxT, num_segments)
    target_BxT = jnp.take_along_axis(log_probs_BxTxV, targets_BxT[..., None], axis=-1, mode="clip")[..., 0]
    base = "last" if how == "chain_rule" else "first"
    merge = jax.vmap(lambda x, c, g: segment_chain_rule(x, c, g, num_segments, base=base))
    return merge(log_probs_BxTxV, target_BxT, segment_BxT)


def teacher_segments(span_BxS, start_BxS, end_BxS, valid_BxS, teacher_length, dump):
    """The span of every teacher position, from each student position's teacher range ``[start, end)``.

    Returns ``[B, teacher_length]`` int32: the span whose range holds the
    position, ``dump`` where none does.
    """
    j_T = jnp.arange(teacher_length)
    inside_BxSxT = (
        valid_BxS[:, :, None] & (start_BxS[:, :, None] <= j_T) & (j_T < end_BxS[:, :, None])
    )
    span_BxT = jnp.max(jnp.where(inside_BxSxT, span_BxS[:, :, None], -1), axis=1)
    return jnp.where(span_BxT >= 0, span_BxT, dump)


def unmatched_ids(size: int, matched_ids: np.ndarray) -> np.ndarray:
    """The ids in ``[0, size)`` that are not in ``matched_ids`` (numpy int, increasing)."""
    mask = np.ones(size, bool)
    mask[np.asarray(matched_ids, int)] = False
    return np.flatnonzero(mask)


def sorted_l1(student_probs, teacher_probs):
    r"""ULD's ``Σ_r |sort↓(q)_r − sort↓(p)_r|`` over ``[..., n]`` and ``[..., m]``, the shorter zero-padded."""
    q = -jnp.sort(-student_probs, axis=-1)
    p = -jnp.sort(-teacher_probs, axis=-1)
    size = max(q.shape[-1], p.shape[-1])
    return jnp.sum(jnp.abs(pad_vocab(q, size) - pad_vocab(p, size)), axis=-1)


def gold_distance(student_log_probs_BxGxVs, teacher_log_probs_BxGxVt, matched_student_K, matched_teacher_K, *,
                  beta):
    r"""GOLD's hybrid distance between merged distributions (see the module docstring, ``'gold'``).

    .. math:: w\, D_\beta(p|_B \,\|\, q|_A) + (1 - w)\, \mathrm{ULD}(q|_{U_s}, p|_{U_t}), \qquad w = K / V_t

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
        matched = losses.generalized_jsd_of_log_probs(jnp.take(lq, a, axis=-1), jnp.take(lp, b, axis=-1), beta=beta)
        value = value + weight * matched
    rest_s, rest_t = unmatched_ids(lq.shape[-1], a), unmatched_ids(lp.shape[-1], b)
    if len(rest_s) and len(rest_t):  # GOLD: no ULD term when one side has no unmatched entry
        rest = sorted_l1(jnp.exp(jnp.take(lq, rest_s, axis=-1)), jnp.exp(jnp.take(lp, rest_t, axis=-1)))
        value = value + (1.0 - weight) * rest
    return value


def bucket_distance(student_log_probs_BxGxVs, teacher_log_probs_BxGxVt, matched_student_K, matched_teacher_K,
                    divergence=losses.forward_kl):
    r"""jdistill's earlier ETA distance (``method.eta_matched_loss = 'bucket'``).

    .. math:: D(\hat p \,\|\, \hat q) + \sum_r \big|\mathrm{sort}↓(q|_{U_s})_r - \mathrm{sort}↓(p|_{U_t})_r\big|

    with ``q̂ = (q(a_1), …, q(a_K), Σ_{v∈U_s} q(v))`` renormalised, ``p̂``
    likewise (no bucket when one side has no unmatched entry).

    Args:
      student_log_probs_BxGxVs: ``[..., V_s]`` student log-probabilities (finite).
      teacher_log_probs_BxGxVt: ``[..., V_t]`` teacher log-probabilities (finite).
      matched_student_K: ``[K]`` numpy int, student ids of the matched pairs.
      matched_teacher_K: ``[K]`` numpy int, teacher ids of the same pairs.
      divergence: ``f(student_logits, teacher_logits, temperature=) -> [...]``.

    Returns:
      ``[...]`` float32.

    Example:
      >>> import jax.numpy as jnp, numpy as np
      >>> q = jnp.log(jnp.array([0.5, 0.3, 0.2]))  # student: entries 0, 1 matched, 2 not
      >>> p = jnp.log(jnp.array([0.3, 0.5, 0.1, 0.1]))  # teacher: entries 1, 0 matched, 2, 3 not
      >>> # KL((.5, .3, .2) | (.5, .3, .2)) = 0, then |.2 - .1| + |0 - .1| over the sorted rest
      >>> round(float(bucket_distance(q, p, np.array([0, 1]), np.array([1, 0]))), 4)
      0.2
    """
    lq, lp = student_log_probs_BxGxVs.astype(jnp.float32), teacher_log_probs_BxGxVt.astype(jnp.float32)
    a, b = np.asarray(matched_student_K, int), np.asarray(matched_teacher_K, int)
    rest_s, rest_t = unmatched_ids(lq.shape[-1], a), unmatched_ids(lp.shape[-1], b)
    coarse_q, coarse_p = [jnp.take(lq, a, axis=-1)], [jnp.take(lp, b, axis=-1)]
    if len(rest_s) and len(rest_t):  # else the matched entries hold all of one side's mass: no bucket
        coarse_q.append(jax.nn.logsumexp(jnp.take(lq, rest_s, axis=-1), axis=-1, keepdims=True))
        coarse_p.append(jax.nn.logsumexp(jnp.take(lp, rest_t, axis=-1), axis=-1, keepdims=True))
    matched = divergence(jnp.concatenate(coarse_q, -1), jnp.concatenate(coarse_p, -1), temperature=1.0)
    fallback = sorted_l1(jnp.exp(jnp.take(lq, rest_s, axis=-1)), jnp.exp(jnp.take(lp, rest_t, axis=-1)))
    return matched + fallback


def eta_token_values(student_logits_BxSxVs, teacher_logits_BxTxVt, batch, distance, *, temperature,
                     span_merge="chain_rule"):
    """Per student position, the ETA value of its span ``[B, S]`` and the positions counted ``[B, S]``.

    ``batch`` holds ``loss_mask``, ``targets``, ``teacher_targets`` and the
    :func:`jdistill.data.alignment_offsets.eta_extras` arrays; ``distance``
    maps merged ``([B, G, V_s], [B, G, V_t])`` log-probabilities to ``[B, G]``
    (:func:`gold_distance` or :func:`bucket_distance` with the matched pairs bound).
    """
    _, length, _ = student_logits_BxSxVs.shape
    dump = length  # the extra segment that collects every position outside a complete span
    valid_BxS = (batch["eta_mask"] * batch["loss_mask"]) > 0
    span_BxS = jnp.where(valid_BxS, batch["eta_span"], dump)
    span_t_BxT = teacher_segments(
        span_BxS, batch["eta_teacher_start"], batch["eta_teacher_end"], valid_BxS,
        teacher_logits_BxTxVt.shape[1], dump,
    )
    lq_BxSxVs = losses.log_probs(student_logits_BxSxVs, temperature=temperature)
    lp_BxTxVt = losses.log_probs(teacher_logits_BxTxVt, temperature=temperature)
    lq_BxGxVs = merge_spans(lq_BxSxVs, batch["targets"], span_BxS, length + 1, span_merge)
    lp_BxGxVt = merge_spans(lp_BxTxVt, batch["teacher_targets"], span_t_BxT, length + 1, span_merge)
    eta_BxG = distance(lq_BxGxVs, lp_BxGxVt)
    return jnp.take_along_axis(eta_BxG, span_BxS, axis=1), valid_BxS.astype(jnp.float32)


def usable_pairs(matched_student_K, matched_teacher_K, student_size, teacher_size):
    """The matched pairs whose ids lie inside both compared vocabularies."""
    a, b = np.asarray(matched_student_K), np.asarray(matched_teacher_K)
    keep = (a < student_size) & (b < teacher_size)
    return a[keep], b[keep]


@dataclasses.dataclass(frozen=True)
class Settings(KDSettings):
    """TRL GOLD's defaults for the alignment and distance; DSKD's kd_rate 0.5 mix with CE."""

    jsd_beta: float = setting(0.5, "beta of the generalized JSD on the matched entries (GOLD's 0.5).")
    eta_span_merge: str = setting("chain_rule", "Span merge: 'chain_rule' (GOLD bayesian) | 'observed' | 'mean'.")
    eta_matched_loss: str = setting("gold", "Matched entries: 'gold' (GOLD's hybrid) | 'bucket' (one unmatched bucket).")

    def __post_init__(self):
        super().__post_init__()
        check_choice("eta_span_merge", self.eta_span_merge, SPAN_MERGES)
        check_choice("eta_matched_loss", self.eta_matched_loss, MATCHED_LOSSES)


def distance_from_settings(settings: Settings) -> Callable:
    """``f(lq, lp, a_K, b_K) -> [...]``: the distance ``method.eta_matched_loss`` names, settings bound."""
    if settings.eta_matched_loss == "gold":
        beta = float(settings.jsd_beta)
        return lambda lq, lp, a, b: gold_distance(lq, lp, a, b, beta=beta)
    divergence = terms.bound_divergence(settings)
    return lambda lq, lp, a, b: bucket_distance(lq, lp, a, b, divergence)


def make(settings: Settings, facts: ModelFacts = ModelFacts()) -> Method:
    del facts  # each side's vocabulary comes from its own tokenizer (host constants)
    distance = distance_from_settings(settings)
    span_merge = settings.eta_span_merge
    temperature = float(settings.temperature)
    constants = HostConstants("eta")

    def prepare_examples(examples, context):
        s_tok, t_tok = context.student_tokenizer, context.teacher_tokenizer

        def compute():
            student_ids, teacher_ids = alignment_vocab.matched_vocabulary(s_tok, t_tok)
            return {
                "matched_student": student_ids,
                "matched_teacher": teacher_ids,
                "student_vocab": np.int32(len(alignment_vocab.vocabulary_forms(s_tok))),
                "teacher_vocab": np.int32(len(alignment_vocab.vocabulary_forms(t_tok))),
            }

        constants.ensure(alignment_mined.vocab_pair_key(s_tok, t_tok), compute)
        if context.split == "train":
            console.info(
                f"eta: {len(constants['matched_student'])} vocabulary entries matched between the student's "
                f"{int(constants['student_vocab'])} and the teacher's {int(constants['teacher_vocab'])}"
            )
        return [
            dataclasses.replace(e, extras={**e.extras, **alignment_offsets.eta_extras(e, s_tok, t_tok)})
            for e in examples
        ]

    def loss(method_params, batch, student, teacher, ctx):
        del method_params
        matched_student, matched_teacher = constants["matched_student"], constants["matched_teacher"]
        z_s_BxSxVs = student.output.logits[..., : int(constants["student_vocab"])]
        z_t_BxTxVt = jax.lax.stop_gradient(teacher.output.logits)[..., : int(constants["teacher_vocab"])]
        a_K, b_K = usable_pairs(matched_student, matched_teacher, z_s_BxSxVs.shape[-1], z_t_BxTxVt.shape[-1])
        ce = terms.response_cross_entropy(student, batch, ctx)
        eta_BxS, counted_BxS = eta_token_values(
            z_s_BxSxVs, z_t_BxTxVt, batch, lambda lq, lp: distance(lq, lp, a_K, b_K),
            temperature=temperature, span_merge=span_merge,
        )
        kd = losses.token_mean(eta_BxS, counted_BxS, normalizer=ctx.num_tokens)
        aligned = losses.token_mean(counted_BxS, batch["loss_mask"], normalizer=ctx.num_tokens)
        return terms.mix(settings, ce, kd), {"ce": ce, "kd": kd, "aligned": aligned}

    return Method(name="eta", loss=loss, cross_vocabulary=True, prepare_examples=prepare_examples)
