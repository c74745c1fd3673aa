r"""DistiLLM-2 (Ko et al., 2025): contrastive distillation (CALD) on batched on-policy data.

At the start of every epoch the teacher and the current student answer every
training prompt (:class:`~jdistill.methods.data_policy.EpochResponses`; the
engine's jitted sampler, temperature 0.8, top-p 0.95 by default). A step of
``B`` prompts trains on ``2B`` rows: skew KL on the teacher responses, skew
reverse KL with a stop-gradient student term in the mixture on the student
responses (paper Eq. 2)::

    L = (1 - β) · R[KL(p ‖ α p + (1 - α) q)]_teacher responses
        + β · R[KL(q ‖ (1 - α) p + α sg(q))]_student responses

Each row computes only its own half (:func:`jdistill.losses.cald_token_divergence`),
and each half is normalised by its own global count (sequences for the
per-sequence reduction ``R``, the default as in the paper's code; tokens for
the per-token one), carried in the batch by the engine.

Both curricula of the paper, on by default:

* β schedule (``method.beta_schedule``): β rises from ``beta0`` (0.5) to
  ``beta_end`` (1) with training progress ('linear'; 'cosine'; 'constant' = off).
* α curriculum (``method.alpha_curriculum``; paper Eq. 7): per response
  ``α = clip(1 - (1 - α0) m / gap, α_min, α0)`` with α0 = ``method.skew_alpha``.
  On teacher responses ``gap = p̄ - q̄``, on student responses ``gap = q̄ - p̄``
  (the skewed mixture moves the matched distribution by ``(1 - α)`` times
  that gap in both halves), with p̄, q̄ the geometric-mean token probabilities
  of the response under teacher and student, computed in the step from the
  current models. The reference gap ``m`` of each half is the mean gap over
  the first epoch (reported as the step metrics ``gap_teacher_responses`` /
  ``gap_student_responses``); the curriculum runs from the second epoch on. A
  response with ``gap <= 0`` gets ``α_min``; a half whose reference gap is
  not positive keeps ``α0``.

On held-out data (gold responses, no student responses) the validation loss
is the skew KL at ``α0`` per response token.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections

from jdistill import losses
from jdistill.methods import data_policy as dp
from jdistill.methods.base import Method
from jdistill.methods.kd import temperature_from_config
from jdistill.methods.sft import fused_options, uses_fused


def _linear(progress, beta0, beta_end):
    return beta0 + (beta_end - beta0) * progress


def _cosine(progress, beta0, beta_end):
    return beta0 + (beta_end - beta0) * 0.5 * (1.0 - jnp.cos(math.pi * progress))


def _constant(progress, beta0, beta_end):
    del beta_end
    return beta0 + 0.0 * progress


# beta_schedule name -> beta(progress in [0, 1], beta0, beta_end).
BETA_SCHEDULES = {"linear": _linear, "cosine": _cosine, "constant": _constant}


def beta_at(schedule: str, progress, beta0: float, beta_end: float):
    """β of the named schedule at ``progress`` (clipped to [0, 1]); float32."""
    try:
        fn = BETA_SCHEDULES[schedule]
    except KeyError:
        raise ValueError(
            f"Unknown method.beta_schedule {schedule!r}; choose one of {sorted(BETA_SCHEDULES)}."
        ) from None
    progress = jnp.clip(jnp.asarray(progress, jnp.float32), 0.0, 1.0)
    return jnp.asarray(fn(progress, beta0, beta_end), jnp.float32)


def _check(config: ml_collections.ConfigDict) -> None:
    for field in ("skew_alpha", "alpha_min", "beta0", "beta_end"):
        if not 0.0 <= float(config[field]) <= 1.0:
            raise ValueError(f"method.{field} must lie in [0, 1], got {config[field]}.")
    if float(config.alpha_min) > float(config.skew_alpha):
        raise ValueError(
            f"method.alpha_min ({config.alpha_min}) must not exceed method.skew_alpha ({config.skew_alpha}), "
            "the curriculum's starting α0."
        )
    if config.beta_schedule not in BETA_SCHEDULES:
        raise ValueError(
            f"Unknown method.beta_schedule {config.beta_schedule!r}; choose one of {sorted(BETA_SCHEDULES)}."
        )
    if config.cald_reduction not in losses.REDUCTIONS:
        raise ValueError(
            f"Unknown method.cald_reduction {config.cald_reduction!r}; choose one of {sorted(losses.REDUCTIONS)}."
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


def make(config: ml_collections.ConfigDict) -> Method:
    _check(config)
    alpha0 = float(config.skew_alpha)
    alpha_min = float(config.alpha_min)
    beta0, beta_end = float(config.beta0), float(config.beta_end)
    schedule = str(config.beta_schedule)
    reduction = str(config.cald_reduction)
    curriculum = bool(config.alpha_curriculum)
    temperature = temperature_from_config(config)
    vocab_size = int(config.vocab_size) if config.vocab_size else None
    fused = fused_options(config) if uses_fused(config) else None

    def token_logprobs(view, targets):
        """``[B, T]`` log-probabilities of the targets under a model (no gradient)."""
        if fused is not None:
            return losses.fused_token_logprobs(
                view.output.hidden_states, view.model.lm_head_weight(), targets,
                temperature=temperature, vocab_size=vocab_size,
            )
        logits = view.output.logits[..., :vocab_size]
        return jax.lax.stop_gradient(losses.token_logprobs(logits, targets, temperature=temperature))

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
        beta = beta_at(schedule, ctx.progress, beta0, beta_end)
        alpha_B, gap_B = alphas(batch, student, teacher, student_row_B)
        alpha_B = jax.lax.stop_gradient(alpha_B)
        weights_BxT = row_weights(batch, reduction)
        half_weight_B = jnp.where(student_row_B > 0.5, beta, 1.0 - beta)
        divergence = dict(on_student_response=student_row_B, alpha=alpha_B, temperature=temperature)
        metrics = {}
        if fused is not None:
            total = losses.fused_kd_loss(
                student.output.hidden_states, student.model.lm_head_weight(),
                teacher.output.hidden_states, teacher.model.lm_head_weight(),
                weights_BxT * half_weight_B[:, None], divergence=losses.cald_token_divergence,
                reduction="token", normalizer=1.0, vocab_size=vocab_size, **fused, **divergence,
            )
        else:
            values_BxT = losses.cald_token_divergence(
                student.output.logits[..., :vocab_size], teacher.output.logits[..., :vocab_size], **divergence
            )
            weighted_BxT = jnp.where(weights_BxT > 0, values_BxT, 0.0) * weights_BxT
            per_row_B = jnp.sum(weighted_BxT, axis=-1)
            skl = jnp.sum(jnp.where(student_row_B > 0.5, 0.0, per_row_B))
            srkl = jnp.sum(jnp.where(student_row_B > 0.5, per_row_B, 0.0))
            total = (1.0 - beta) * skl + beta * srkl
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

    def validation_loss(batch, student, teacher, ctx):
        """Gold responses (held-out data): skew KL at α0, summed over tokens / ctx.num_tokens."""
        if fused is not None:
            skl = losses.fused_kd_loss(
                student.output.hidden_states, student.model.lm_head_weight(),
                teacher.output.hidden_states, teacher.model.lm_head_weight(), batch["loss_mask"],
                divergence="skew_forward_kl", alpha=alpha0, temperature=temperature,
                normalizer=ctx.num_tokens, vocab_size=vocab_size, **fused,
            )
        else:
            values_BxT = losses.skew_forward_kl(
                student.output.logits[..., :vocab_size], teacher.output.logits[..., :vocab_size],
                alpha=alpha0, temperature=temperature,
            )
            skl = losses.token_mean(values_BxT, batch["loss_mask"], normalizer=ctx.num_tokens)
        return skl, {"skl": skl}

    def loss(method_params, batch, student, teacher, ctx):
        del method_params
        if dp.STUDENT_ROW in batch:
            return contrastive_loss(batch, student, teacher, ctx)
        return validation_loss(batch, student, teacher, ctx)

    no_logits = {"return_logits": False} if fused is not None else {}
    return Method(
        name="distillm2", loss=loss, student_call=no_logits, teacher_call=no_logits,
        data_policy=dp.EpochResponses(measure_reference_gap=curriculum),
    )
