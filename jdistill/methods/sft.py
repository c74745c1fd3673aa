"""Supervised fine-tuning: cross-entropy on the gold responses, no teacher.

The baseline every distillation method is compared against, and SeqKD's
training objective once the responses come from a teacher.
"""

from __future__ import annotations

import ml_collections

from jdistill import losses
from jdistill.methods.base import Method, StepContext, ModelView


def response_cross_entropy(student: ModelView, batch, ctx: StepContext):
    """Summed CE over response tokens divided by the global response-token count."""
    ce_BxT = losses.token_cross_entropy(student.output.logits, batch["targets"])
    return losses.token_mean(ce_BxT, batch["loss_mask"], normalizer=ctx.num_tokens)


def make(config: ml_collections.ConfigDict) -> Method:
    del config  # SFT has no parameters.

    def loss(method_params, batch, student, teacher, ctx):
        del method_params, teacher
        ce = response_cross_entropy(student, batch, ctx)
        return ce, {"ce": ce}

    return Method(name="sft", loss=loss, needs_teacher=False)
