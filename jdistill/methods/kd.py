"""Vanilla white-box KD: CE on the gold tokens mixed with any divergence.

``L = (1 - kd_rate) · CE(z_s, y) + kd_rate · D(p_teacher, q_student)`` over the
response tokens, both terms normalised by the global response-token count
(DSKD's baseline; kd_rate 0.5). ``D`` is any divergence of
:mod:`jdistill.losses`, at ``temperature`` (no τ² factor).

Teacher and student must share one tokenizer. Their LM heads may still differ
in size when one vocabulary is only padded (Qwen2.5-7B's 152064 rows vs the
1.5B's 151936): the logits are compared over the tokenizer's rows
(:class:`~jdistill.methods.base.ModelFacts`), or ``vocab_size`` when set.
"""

from __future__ import annotations

import dataclasses

from jdistill.methods import terms
from jdistill.methods.base import Method, ModelFacts
from jdistill.methods.settings import KDSettings, setting


@dataclasses.dataclass(frozen=True)
class Settings(KDSettings):
    """DSKD's KD baseline (``scripts/gpt2/vanilla_kd_gpt2_base.sh``): forward KL, kd_rate 0.5, τ 2."""

    temperature: float = setting(2.0, "Divides student and teacher logits in the divergence (DSKD's KD_TEMP).")


def make(settings: Settings, facts: ModelFacts = ModelFacts()) -> Method:
    fused = terms.fused_options(settings, facts)

    def loss(method_params, batch, student, teacher, ctx):
        del method_params
        ce = terms.response_cross_entropy(student, batch, ctx, fused=fused)
        kd = terms.settings_divergence_term(settings, facts, student, teacher, batch, ctx, fused)
        return terms.mix(settings, ce, kd), {"ce": ce, "kd": kd}

    call = terms.logits_call(fused)
    return Method(name="kd", loss=loss, student_call=call, teacher_call=call, packable=True)
