"""The loss of the on-policy token-level methods: one divergence over the response tokens.

``L = Σ_tokens D(p_teacher, q_student) / N`` with ``N`` the global number of
response tokens of the step, on whatever rows the step trains on (dataset
responses, student samples, teacher samples, replayed samples). GKD, ImitKD
and DistiLLM share it and differ only in their data policy.
"""

from __future__ import annotations

from jdistill.methods import terms
from jdistill.methods.base import Method, ModelFacts
from jdistill.methods.settings import DivergenceSettings


def make_divergence_method(settings: DivergenceSettings, facts: ModelFacts, *, name: str, data_policy) -> Method:
    """A :class:`Method` whose loss is the configured divergence (with its argument) per response token."""
    fused = terms.fused_options(settings, facts)

    def loss(method_params, batch, student, teacher, ctx):
        del method_params
        kd = terms.settings_divergence_term(settings, facts, student, teacher, batch, ctx, fused)
        return kd, {"kd": kd}

    call = terms.logits_call(fused)
    return Method(name=name, loss=loss, student_call=call, teacher_call=call, data_policy=data_policy)
