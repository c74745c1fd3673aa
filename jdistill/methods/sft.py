"""Supervised fine-tuning: cross-entropy on the gold responses, no teacher.

The baseline every distillation method is compared against, and SeqKD's
training objective once the responses come from a teacher.
"""

from __future__ import annotations

import ml_collections

from jdistill import losses
from jdistill.methods.base import Method, StepContext, ModelView


def uses_fused(config: ml_collections.ConfigDict) -> bool:
    """Whether the chunked (fused-linear) losses replace the logits ones; see ``method.fused``."""
    if config.fused not in ("auto", "on", "off"):
        raise ValueError(f"method.fused must be 'auto', 'on' or 'off', got {config.fused!r}.")
    if config.fused == "auto":
        return bool(config.vocab_size) and int(config.vocab_size) >= int(config.fused_min_vocab)
    return config.fused == "on"


def fused_options(config: ml_collections.ConfigDict) -> dict:
    return {"memory_budget_bytes": int(config.fused_memory_mb) * 2**20}


def response_cross_entropy(student: ModelView, batch, ctx: StepContext, *, fused: dict | None = None):
    """Summed CE over response tokens divided by the global response-token count.

    With ``fused`` (options of the fused kernels), computed in token chunks
    from the last hidden states and the LM head, without full logits.
    """
    if fused is not None:
        return losses.fused_cross_entropy(
            student.output.hidden_states, student.model.lm_head_weight(), batch["targets"], batch["loss_mask"],
            normalizer=ctx.num_tokens, **fused,
        )
    ce_BxT = losses.token_cross_entropy(student.output.logits, batch["targets"])
    return losses.token_mean(ce_BxT, batch["loss_mask"], normalizer=ctx.num_tokens)


def make(config: ml_collections.ConfigDict) -> Method:
    fused = fused_options(config) if uses_fused(config) else None

    def loss(method_params, batch, student, teacher, ctx):
        del method_params, teacher
        ce = response_cross_entropy(student, batch, ctx, fused=fused)
        return ce, {"ce": ce}

    student_call = {"return_logits": False} if fused is not None else {}
    return Method(name="sft", loss=loss, needs_teacher=False, student_call=student_call)
