r"""Exact token alignment (ETA) across vocabularies (DSKDv2's ETA; TRL's GOLD), with a ULD fallback.

On the host (:func:`jdistill.data.alignment_offsets.eta_extras`): both
tokenizations of the response are cut into *spans*, the smallest groups of
consecutive tokens on each side that cover the same characters (by the fast
tokenizers' character offsets; each side's EOS is a span of its own). The
*matched vocabulary* is the set of pairs ``(a_k, b_k)`` of a student and a
teacher entry with the same normalised form
(:func:`jdistill.data.alignment_vocab.matched_vocabulary`); every other entry
is *unmatched* (``U_s``, ``U_t``).

In the step, for each span ``s`` with student positions ``I_s`` and teacher
positions ``J_s`` (the positions predicting its tokens):

* the distributions within a span are merged (probabilities summed, then
  divided by the count; computed in log space):
  ``q̄_s = mean_{i∈I_s} softmax(z^s_i/τ)``, ``p̄_s = mean_{j∈J_s} softmax(z^t_j/τ)``;
* matched entries are compared directly, through the coarse distributions
  over the ``K`` matched entries plus one bucket holding all unmatched mass,

  .. math:: \hat q_s = \big(q̄_s(a_1), …, q̄_s(a_K),\ \textstyle\sum_{v∈U_s} q̄_s(v)\big), \quad
            \hat p_s = \big(p̄_s(b_1), …, p̄_s(b_K),\ \textstyle\sum_{u∈U_t} p̄_s(u)\big)

  with the configured divergence ``D(\hat p_s \| \hat q_s)`` (forward KL by default);
  when one side has no unmatched entry the bucket is left out and the
  divergence compares the renormalised matched entries;
* the unmatched entries fall back to ULD: their probabilities (not
  renormalised; matched entries set to 0) are sorted in decreasing order, the
  shorter vector zero-padded, and compared with the L1 distance.

.. math:: \mathrm{ETA}_s = D(\hat p_s \,\|\, \hat q_s)
          + \sum_r \big|\mathrm{sort}(q̄_s|_{U_s})_r - \mathrm{sort}(p̄_s|_{U_t})_r\big|

Each student response token contributes its span's value (a span of ``k``
student tokens counts ``k`` times; spans cut by truncation count 0):
``L = (1 - kd_rate) · CE(z_s, y) + kd_rate · Σ_i M_i ETA_{s(i)} / N``.
With one tokenizer on both sides every span is one token, every entry is
matched and ``ETA`` is exactly ``D(p ‖ q)`` (plain KD); with no matched entry
it is ULD between the merged distributions.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jdistill import losses
from jdistill.data import alignment_mined, alignment_offsets, alignment_vocab
from jdistill.engine import console
from jdistill.methods.base import Method
from jdistill.methods.host_constants import HostConstants
from jdistill.methods.kd import divergence_from_config, kd_rate_from_config, temperature_from_config
from jdistill.methods.sft import response_cross_entropy
from jdistill.methods.uld import pad_vocab


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


def unmatched_mask(size: int, matched_ids: np.ndarray) -> np.ndarray:
    """``[size]`` bool, False at the matched entries."""
    mask = np.ones(size, bool)
    mask[matched_ids] = False
    return mask


def eta_distance(student_log_probs_BxGxVs, teacher_log_probs_BxGxVt, matched_student_K, matched_teacher_K,
                 divergence=losses.forward_kl):
    r"""``ETA`` between merged student and teacher distributions (see the module docstring).

    Args:
      student_log_probs_BxGxVs: ``[..., V_s]`` student log-probabilities (finite).
      teacher_log_probs_BxGxVt: ``[..., V_t]`` teacher log-probabilities (finite).
      matched_student_K: ``[K]`` numpy int, student ids of the matched pairs.
      matched_teacher_K: ``[K]`` numpy int, teacher ids of the same pairs.
      divergence: ``f(student_logits, teacher_logits, temperature=) -> [...]``.

    Returns:
      ``[...]`` float32: ``D(p̂ ‖ q̂) + ULD`` of the unmatched entries.

    Example:
      >>> import jax.numpy as jnp, numpy as np
      >>> q = jnp.log(jnp.array([0.5, 0.3, 0.2]))  # student: entries 0, 1 matched, 2 not
      >>> p = jnp.log(jnp.array([0.3, 0.5, 0.1, 0.1]))  # teacher: entries 1, 0 matched, 2, 3 not
      >>> # KL((.5, .3, .2) | (.5, .3, .2)) = 0, then |.2 - .1| + |0 - .1| over the sorted rest
      >>> round(float(eta_distance(q, p, np.array([0, 1]), np.array([1, 0]))), 4)
      0.2
    """
    lq, lp = student_log_probs_BxGxVs.astype(jnp.float32), teacher_log_probs_BxGxVt.astype(jnp.float32)
    a, b = np.asarray(matched_student_K), np.asarray(matched_teacher_K)
    rest_s, rest_t = unmatched_mask(lq.shape[-1], a), unmatched_mask(lp.shape[-1], b)
    coarse_q, coarse_p = [jnp.take(lq, a, axis=-1)], [jnp.take(lp, b, axis=-1)]
    if rest_s.any() and rest_t.any():  # else the matched entries hold all of one side's mass: no bucket
        coarse_q.append(jax.nn.logsumexp(jnp.where(rest_s, lq, -jnp.inf), axis=-1, keepdims=True))
        coarse_p.append(jax.nn.logsumexp(jnp.where(rest_t, lp, -jnp.inf), axis=-1, keepdims=True))
    matched = divergence(jnp.concatenate(coarse_q, -1), jnp.concatenate(coarse_p, -1), temperature=1.0)
    q_rest = -jnp.sort(-jnp.where(rest_s, jnp.exp(lq), 0.0), axis=-1)
    p_rest = -jnp.sort(-jnp.where(rest_t, jnp.exp(lp), 0.0), axis=-1)
    size = max(q_rest.shape[-1], p_rest.shape[-1])
    fallback = jnp.sum(jnp.abs(pad_vocab(q_rest, size) - pad_vocab(p_rest, size)), axis=-1)
    return matched + fallback


def eta_token_values(student_logits_BxSxVs, teacher_logits_BxTxVt, batch, matched_student_K, matched_teacher_K,
                     *, temperature, divergence=losses.forward_kl):
    """Per student position, the ETA value of its span ``[B, S]`` and the positions counted ``[B, S]``.

    ``batch`` holds ``loss_mask`` and the :func:`jdistill.data.alignment_offsets.eta_extras` arrays.
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
    merge = jax.vmap(segment_log_mean_exp, in_axes=(0, 0, None))
    lq_BxGxVs = merge(lq_BxSxVs, span_BxS, length + 1)
    lp_BxGxVt = merge(lp_BxTxVt, span_t_BxT, length + 1)
    eta_BxG = eta_distance(lq_BxGxVs, lp_BxGxVt, matched_student_K, matched_teacher_K, divergence)
    return jnp.take_along_axis(eta_BxG, span_BxS, axis=1), valid_BxS.astype(jnp.float32)


def usable_pairs(matched_student_K, matched_teacher_K, student_size, teacher_size):
    """The matched pairs whose ids lie inside both compared vocabularies."""
    a, b = np.asarray(matched_student_K), np.asarray(matched_teacher_K)
    keep = (a < student_size) & (b < teacher_size)
    return a[keep], b[keep]


def make(config: ml_collections.ConfigDict) -> Method:
    divergence = divergence_from_config(config)
    kd_rate = kd_rate_from_config(config)
    temperature = temperature_from_config(config)
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
        ce = response_cross_entropy(student, batch, ctx)
        eta_BxS, counted_BxS = eta_token_values(
            z_s_BxSxVs, z_t_BxTxVt, batch, a_K, b_K, temperature=temperature, divergence=divergence
        )
        kd = losses.token_mean(eta_BxS, counted_BxS, normalizer=ctx.num_tokens)
        aligned = losses.token_mean(counted_BxS, batch["loss_mask"], normalizer=ctx.num_tokens)
        total = (1.0 - kd_rate) * ce + kd_rate * kd
        return total, {"ce": ce, "kd": kd, "aligned": aligned}

    return Method(name="eta", loss=loss, cross_vocabulary=True, prepare_examples=prepare_examples)
