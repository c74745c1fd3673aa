r"""DistiLLM-2 (Ko et al., 2025): contrastive distillation (CALD) on batched on-policy data.

At the start of every epoch the teacher and the current student answer every
training prompt (:class:`~jdistill.methods.distillm2_feed.EpochResponsesFeed`;
the jitted sampler, temperature 0.8, top-p 0.95 by default, ``method.sampling``). A step of
``B`` prompts trains on ``2B`` rows: skew KL on the teacher responses, skew
reverse KL with a stop-gradient student term in the mixture on the student
responses, weighted as the authors' released trainer does
(``jongwooko/distillm-2``, ``src/distillm_trainer.py``, ``kd_loss``)::

    L = (2 - β) · R[KL(p ‖ α p + (1 - α) q)]_teacher responses
        + β · R[KL(q ‖ (1 - α) p + α sg(q))]_student responses

which is twice the paper's Eq. 2, ``(1 - β') SKL + β' SRKL``, with ``β' = β/2``.
Each row computes only its own half (:func:`jdistill.losses.cald_token_divergence`),
and each half is normalised by its own global count (sequences for the
per-sequence reduction ``R``, the default as in the paper's code; tokens for
the per-token one), carried in the batch by the engine.

Both curricula of the paper, on by default:

* β schedule (:func:`release_beta`, the release's ``gradual_beta``): β rises
  linearly from ``method.beta_start`` (1.0) to ``method.beta_cap`` (1.5) over
  the first ``method.beta_ramp`` (0.5) of training, then stays at the cap; so
  the teacher-response term never loses more than half its weight.
  ``--config.method.beta_cap=1.0`` is the release's default (``gradual_beta =
  False``: equal weights throughout) and the paper's "no rising β" ablation.
* α curriculum (``method.alpha_curriculum``; paper Eq. 7, in the release's
  form): per response ``α = clip(1 - (1 - α0) m / (gap + 1e-5), α_min, α0)``
  with α0 = ``method.skew_alpha`` (:func:`jdistill.losses.curriculum_alpha`).
  On teacher responses ``gap = p̄ - q̄``, on student responses ``gap = q̄ - p̄``
  (the skewed mixture moves the matched distribution by ``(1 - α)`` times
  that gap in both halves), with p̄, q̄ the geometric-mean token probabilities
  of the response under teacher and student, computed in the step from the
  current models. The reference gap ``m`` of each half is the mean gap over
  the first epoch (reported as the step metrics ``gap_teacher_responses`` /
  ``gap_student_responses``); the curriculum runs from the second epoch on. A
  response whose gap is negative (the student already more likely than the
  teacher) keeps ``α0``, as the release's formula gives; a half whose
  reference gap is not positive keeps ``α0``. (The release measures ``m``
  from its logged metrics but reads them from the wrong dictionary, so its
  curriculum silently stays at α0; the paper's Table 5 credits it with +0.4
  win rate, so jdistill runs it, and ``alpha_curriculum=false`` is the release.)

On held-out data (gold responses, no student responses) the validation loss
is the skew KL at ``α0`` per response token.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jdistill import losses
from jdistill.methods import distillm2_feed as dp
from jdistill.methods import terms
from jdistill.methods.base import Method, ModelFacts
from jdistill.methods.settings import DivergenceSettings, RolloutSettings, check_range, setting


def release_beta(progress, *, start: float = 1.0, cap: float = 1.5, ramp: float = 0.5):
    r"""β of DistiLLM-2's released trainer at ``progress`` (the fraction of training done); float32.

    .. math:: \beta = \mathrm{start} + (\mathrm{cap} - \mathrm{start})\,
              \min\big(1, \mathrm{progress} / \mathrm{ramp}\big)

    The release (``src/distillm_trainer.py``, ``kd_loss``, ``gradual_beta``)
    computes ``beta = 1.0 + 0.5 * min(1., 2 * global_step / max_steps)``: start
    1, cap 1.5, ramp 0.5 (the first half of training). The loss weighs the two
    halves as ``(2 - β) · SKL + β · SRKL`` (:func:`release_weights`). With
    ``cap == start`` β stays constant (the release's default ``gradual_beta =
    False``: ``β = 1``, equal weights).
    """
    progress = jnp.clip(jnp.asarray(progress, jnp.float32), 0.0, 1.0)
    ramped = jnp.minimum(1.0, progress / ramp) if ramp > 0 else jnp.ones_like(progress)
    return jnp.asarray(start + (cap - start) * ramped, jnp.float32)


def release_weights(beta):
    """``(w_skl, w_srkl) = (2 - β, β)``: the release's weights of the teacher- and student-response halves.

    In the normalised form of the paper's Eq. 2, ``(1 - β') SKL + β' SRKL``, that is
    ``2 · [(1 - β/2) SKL + (β/2) SRKL]``: ``β' = β / 2``, so the release's 1 → 1.5 is
    the paper's 0.5 → 0.75 and the teacher-response term keeps at least a quarter
    of the weight.
    """
    beta = jnp.asarray(beta, jnp.float32)
    return 2.0 - beta, beta


@dataclasses.dataclass(frozen=True)
class Settings(DivergenceSettings):
    """DistiLLM-2 as the paper's full method, with the release's weighting (see the module docstring)."""

    skew_alpha: float = setting(0.1, "alpha0: the skew of both halves, and the curriculum's start and upper clip.")
    alpha_curriculum: bool = setting(True, "Per-response alpha curriculum (paper Eq. 7) from the second epoch on.")
    alpha_min: float = setting(0.01, "Lower clip of the curriculum alpha (the release's 1e-2).")
    beta_start: float = setting(1.0, "beta at the start; the loss is (2 - beta)*SKL + beta*SRKL (release).")
    beta_cap: float = setting(1.5, "beta after the ramp (release gradual_beta); = beta_start turns it off.")
    beta_ramp: float = setting(0.5, "Fraction of training over which beta rises linearly to beta_cap.")
    cald_reduction: str = setting("sequence", "'sequence' (mean per response, the release) | 'token'.")
    sampling: RolloutSettings = setting(
        factory=lambda: RolloutSettings(temperature=0.8, top_p=0.95, top_k=0),
        help="Teacher and student responses as the release's generation (temperature 0.8, top-p 0.95).",
    )
    generation_batch_size: int = setting(64, "Prompts per generation call at each epoch start (global).")

    def __post_init__(self):
        super().__post_init__()
        check_range("alpha_min", self.alpha_min, 0.0, 1.0)
        if self.alpha_min > self.skew_alpha:
            raise ValueError(
                f"method.alpha_min ({self.alpha_min}) must not exceed method.skew_alpha ({self.skew_alpha}), "
                "the curriculum's starting α0."
            )
        for name in ("beta_start", "beta_cap"):
            value = getattr(self, name)
            if not 0.0 <= value <= 2.0:
                raise ValueError(
                    f"method.{name} must lie in [0, 2] (the loss is (2 - β)·SKL + β·SRKL), got {value}."
                )
        if not 0.0 < self.beta_ramp <= 1.0:
            raise ValueError(
                f"method.beta_ramp must lie in (0, 1] (the fraction of training over which β goes from "
                f"beta_start to beta_cap), got {self.beta_ramp}."
            )
        if self.cald_reduction not in losses.REDUCTIONS:
            raise ValueError(
                f"Unknown method.cald_reduction {self.cald_reduction!r}; choose one of {sorted(losses.REDUCTIONS)}."
            )


def row_weights(batch, reduction: str):
    """``[B, T]`` weights: a half's weights sum to 1 over the global batch (its own global count)."""
    mask = batch["loss_mask"].astype(jnp.float32)
    if reduction == "sequence":
        per_row = jnp.sum(mask, axis=-1, keepdims=True)
        count = batch[dp.HALF_SEQUENCES][:, None]
        denominator = per_row * count
    else:
        denominator = batch[dp.HALF_TOKENS][:, None]
    return jnp.where(denominator > 0, mask / jnp.where(denominator > 0, denominator, 1.0), 0.0)


def sequence_weights(batch):
    """``[B]``: 1 / (global number of rows of the half) on rows with response tokens, else 0."""
    has_tokens = jnp.any(batch["loss_mask"] > 0, axis=-1)
    count = batch[dp.HALF_SEQUENCES]
    return jnp.where(has_tokens & (count > 0), 1.0 / jnp.where(count > 0, count, 1.0), 0.0)


def make(settings: Settings, facts: ModelFacts = ModelFacts()) -> Method:
    alpha0 = float(settings.skew_alpha)
    alpha_min = float(settings.alpha_min)
    beta_schedule = dict(start=float(settings.beta_start), cap=float(settings.beta_cap),
                         ramp=float(settings.beta_ramp))
    reduction = str(settings.cald_reduction)
    curriculum = bool(settings.alpha_curriculum)
    temperature = float(settings.temperature)
    vocab_size = terms.vocab_rows(settings, facts)
    fused = terms.fused_options(settings, facts)

    def token_logprobs(view, targets):
        """``[B, T]`` log-probabilities of the targets under a model (no gradient)."""
        return terms.token_logprobs(view, targets, temperature=temperature, vocab_size=vocab_size, fused=fused)

    def alphas(batch, student, teacher, student_row_B):
        """Per-row α and the oriented gaps ``[B]`` (the gaps only with the curriculum)."""
        rows = batch["loss_mask"].shape[0]
        if not curriculum:
            return jnp.full((rows,), alpha0, jnp.float32), None
        student_lp = token_logprobs(student, batch["targets"])
        teacher_lp = token_logprobs(teacher, batch["targets"])
        on_student = student_row_B[:, None] > 0.5
        matched_lp = jnp.where(on_student, student_lp, teacher_lp)  # p on teacher rows, q on student rows
        other_lp = jnp.where(on_student, teacher_lp, student_lp)
        mask = batch["loss_mask"]
        gap_B = losses.probability_gap(matched_lp, other_lp, mask)
        reference_B = batch[dp.REFERENCE_GAP]
        known = (batch[dp.CURRICULUM_ON] > 0.5) & (reference_B > 0)
        scheduled_B = losses.curriculum_alpha(
            matched_lp, other_lp, mask, reference_gap=jnp.where(known, reference_B, 1.0),
            alpha0=alpha0, alpha_min=alpha_min,
        )
        return jnp.where(known, scheduled_B, alpha0), gap_B

    def contrastive_loss(batch, student, teacher, ctx):
        student_row_B = batch[dp.STUDENT_ROW].astype(jnp.float32)
        beta = release_beta(ctx.progress, **beta_schedule)
        w_skl, w_srkl = release_weights(beta)
        alpha_B, gap_B = alphas(batch, student, teacher, student_row_B)
        alpha_B = jax.lax.stop_gradient(alpha_B)
        weights_BxT = row_weights(batch, reduction)
        half_weight_B = jnp.where(student_row_B > 0.5, w_srkl, w_skl)
        divergence = dict(on_student_response=student_row_B, alpha=alpha_B, temperature=temperature)
        metrics = {}
        if fused is not None:
            total = losses.fused_kd_loss(
                student.output.hidden_states, student.model.lm_head_weight(),
                teacher.output.hidden_states, teacher.model.lm_head_weight(),
                weights_BxT * half_weight_B[:, None], divergence=losses.cald_token_divergence,
                reduction="token", normalizer=1.0, vocab_size=vocab_size,
                logit_softcap=(terms.logit_softcap(student), terms.logit_softcap(teacher)), **fused, **divergence,
            )
        else:
            values_BxT = losses.cald_token_divergence(
                student.output.logits[..., :vocab_size], teacher.output.logits[..., :vocab_size], **divergence
            )
            weighted_BxT = jnp.where(weights_BxT > 0, values_BxT, 0.0) * weights_BxT
            per_row_B = jnp.sum(weighted_BxT, axis=-1)
            skl = jnp.sum(jnp.where(student_row_B > 0.5, 0.0, per_row_B))
            srkl = jnp.sum(jnp.where(student_row_B > 0.5, per_row_B, 0.0))
            total = w_skl * skl + w_srkl * srkl
            metrics.update(skl=skl, srkl=srkl)
        # Per-step constants and per-half means, as sums that add up over micro-batches.
        seq_w_B = sequence_weights(batch)
        teacher_w_B = jnp.where(student_row_B > 0.5, 0.0, seq_w_B)
        student_w_B = jnp.where(student_row_B > 0.5, seq_w_B, 0.0)
        metrics["beta"] = beta * jnp.sum(teacher_w_B)
        metrics["alpha_teacher_responses"] = jnp.sum(teacher_w_B * alpha_B)
        metrics["alpha_student_responses"] = jnp.sum(student_w_B * alpha_B)
        if gap_B is not None:
            metrics[dp.GAP_METRICS[0]] = jnp.sum(teacher_w_B * gap_B)
            metrics[dp.GAP_METRICS[1]] = jnp.sum(student_w_B * gap_B)
        return total, metrics

    def contrastive(method_params, batch, student, teacher, ctx):
        del method_params
        return contrastive_loss(batch, student, teacher, ctx)

    def validation_loss(method_params, batch, student, teacher, ctx):
        """Gold responses (held-out data): skew KL at α0, summed over tokens / ctx.num_tokens."""
        del method_params
        skl = terms.divergence_term(
            student, teacher, batch["loss_mask"], "skew_forward_kl", normalizer=ctx.num_tokens, alpha=alpha0,
            temperature=temperature, vocab_size=vocab_size, fused=fused,
        )
        return skl, {"skl": skl}

    def make_feed(ctx):
        sampling = ctx.sampling_settings(**dataclasses.asdict(settings.sampling), setting="method.sampling.max_new_tokens")
        return dp.EpochResponsesFeed(ctx, sampling, generation_batch_size=int(settings.generation_batch_size),
                                     measure_reference_gap=curriculum)

    call = terms.logits_call(fused)
    return Method(
        name="distillm2", loss=contrastive, eval_loss=validation_loss, student_call=call, teacher_call=call,
        make_feed=make_feed, prompts_only=True,
    )
