"""The loss of the on-policy token-level methods: one divergence over the response tokens.

``L = Σ_tokens D(p_teacher, q_student) / N`` with ``N`` the global number of
response tokens of the step, on whatever rows the step trains on (dataset
responses, student samples, teacher samples, replayed samples). GKD, ImitKD
and DistiLLM share it and differ only in their data policy.
"""

from __future__ import annotations

import ml_collections

from jdistill import losses
from jdistill.methods.base import Method
from jdistill.methods.kd import divergence_arguments, temperature_from_config
from jdistill.methods.sft import fused_options, uses_fused


def make_divergence_method(config: ml_collections.ConfigDict, *, name: str, data_policy) -> Method:
    """A :class:`Method` whose loss is ``config.divergence`` (with its argument) per response token."""
    divergence = losses.get_divergence(config.divergence)
    extra = divergence_arguments(config)
    temperature = temperature_from_config(config)
    vocab_size = int(config.vocab_size) if config.vocab_size else None
    fused = fused_options(config) if uses_fused(config) else None

    def loss(method_params, batch, student, teacher, ctx):
        del method_params
        if fused is not None:
            kd = losses.fused_kd_loss(
                student.output.hidden_states, student.model.lm_head_weight(),
                teacher.output.hidden_states, teacher.model.lm_head_weight(), batch["loss_mask"],
                divergence=config.divergence, temperature=temperature, normalizer=ctx.num_tokens,
                vocab_size=vocab_size, **fused, **extra,
            )
        else:
            values_BxT = divergence(
                student.output.logits[..., :vocab_size], teacher.output.logits[..., :vocab_size],
                temperature=temperature, **extra,
            )
            kd = losses.token_mean(values_BxT, batch["loss_mask"], normalizer=ctx.num_tokens)
        return kd, {"kd": kd}

    no_logits = {"return_logits": False} if fused is not None else {}
    return Method(name=name, loss=loss, student_call=no_logits, teacher_call=no_logits, data_policy=data_policy)
