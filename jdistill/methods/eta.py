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

The array kernels (span merges, ``gold_distance``, ``bucket_distance``) are in
:mod:`jdistill.losses.span_alignment`; this module keeps the settings, the host
hook and the batch glue (:func:`eta_token_values`).
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

SPAN_MERGES = losses.SPAN_MERGES
MATCHED_LOSSES = ("gold", "bucket")


def eta_token_values(student_logits_BxSxVs, teacher_logits_BxTxVt, batch, distance, *, temperature,
                     span_merge="chain_rule"):
    """Per student position, the ETA value of its span ``[B, S]`` and the positions counted ``[B, S]``.

    ``batch`` holds ``loss_mask``, ``targets``, ``teacher_targets`` and the
    :func:`jdistill.data.alignment_offsets.eta_extras` arrays; ``distance``
    maps merged ``([B, G, V_s], [B, G, V_t])`` log-probabilities to ``[B, G]``
    (:func:`jdistill.losses.gold_distance` or :func:`jdistill.losses.bucket_distance`
    with the matched pairs bound).
    """
    _, length, _ = student_logits_BxSxVs.shape
    dump = length  # the extra segment that collects every position outside a complete span
    valid_BxS = (batch["eta_mask"] * batch["loss_mask"]) > 0
    span_BxS = jnp.where(valid_BxS, batch["eta_span"], dump)
    span_t_BxT = losses.teacher_segments(
        span_BxS, batch["eta_teacher_start"], batch["eta_teacher_end"], valid_BxS,
        teacher_logits_BxTxVt.shape[1], dump,
    )
    lq_BxSxVs = losses.log_probs(student_logits_BxSxVs, temperature=temperature)
    lp_BxTxVt = losses.log_probs(teacher_logits_BxTxVt, temperature=temperature)
    lq_BxGxVs = losses.merge_spans(lq_BxSxVs, batch["targets"], span_BxS, length + 1, span_merge)
    lp_BxGxVt = losses.merge_spans(lp_BxTxVt, batch["teacher_targets"], span_t_BxT, length + 1, span_merge)
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
        return lambda lq, lp, a, b: losses.gold_distance(lq, lp, a, b, beta=beta)
    divergence = terms.bound_divergence(settings)
    return lambda lq, lp, a, b: losses.bucket_distance(lq, lp, a, b, divergence)


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
