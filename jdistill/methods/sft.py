"""Supervised fine-tuning: cross-entropy on the gold responses, no teacher.

The baseline every distillation method is compared against, and SeqKD's
training objective once the responses come from a teacher.
"""

from __future__ import annotations

import dataclasses

from jdistill.methods import terms
from jdistill.methods.base import Method, ModelFacts
from jdistill.methods.settings import LossSettings


@dataclasses.dataclass(frozen=True)
class Settings(LossSettings):
    """SFT reads only the shared loss settings (vocabulary rows, fused path)."""


def make(settings: Settings, facts: ModelFacts = ModelFacts()) -> Method:
    fused = terms.fused_options(settings, facts)

    def loss(method_params, batch, student, teacher, ctx):
        del method_params, teacher
        ce = terms.response_cross_entropy(student, batch, ctx, fused=fused)
        return ce, {"ce": ce}

    return Method(name="sft", loss=loss, needs_teacher=False, student_call=terms.logits_call(fused),
                  packable=True)
