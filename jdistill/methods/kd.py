"""Vanilla white-box KD: CE on the gold tokens mixed with any divergence.

``L = (1 - kd_rate) · CE(z_s, y) + kd_rate · D(p_teacher, q_student)`` over the
response tokens, both terms normalised by the global response-token count
(DSKD's baseline; kd_rate 0.5). ``D`` is any divergence of
:mod:`jdistill.losses`, at ``temperature`` (no τ² factor).

Teacher and student must share one tokenizer. Their LM heads may still differ
in size when one vocabulary is only padded (Qwen2.5-7B's 152064 rows vs the
1.5B's 151936): the logits are compared over the shared ``vocab_size`` rows,
which the engine sets from the tokenizer.
"""

from __future__ import annotations

import ml_collections

from jdistill import losses
from jdistill.methods.base import Method
from jdistill.methods.sft import fused_options, response_cross_entropy, uses_fused

# divergence name -> (kernel keyword, method config field) of its one extra argument.
DIVERGENCE_ARGUMENTS = {
    "generalized_jsd": ("beta", "jsd_beta"),
    "skew_forward_kl": ("alpha", "skew_alpha"),
    "skew_reverse_kl": ("alpha", "skew_alpha"),
    "adaptive_kl": ("mu", "akl_mu"),
}


def divergence_arguments(config: ml_collections.ConfigDict) -> dict:
    """The configured divergence's extra keyword argument, e.g. ``{'alpha': 0.1}``."""
    argument = DIVERGENCE_ARGUMENTS.get(config.divergence)
    if argument is None:
        return {}
    keyword, field = argument
    return {keyword: config[field]}


def divergence_from_config(config: ml_collections.ConfigDict):
    """The configured divergence with its extra argument bound: ``f(s, t, temperature=)``."""
    kernel = losses.get_divergence(config.divergence)
    extra = divergence_arguments(config)

    def bound(student_logits, teacher_logits, **kwargs):
        return kernel(student_logits, teacher_logits, **extra, **kwargs)

    return bound


def kd_rate_from_config(config: ml_collections.ConfigDict) -> float:
    """``method.kd_rate``, the weight of the distillation term against CE, checked to lie in [0, 1]."""
    kd_rate = float(config.kd_rate)
    if not 0.0 <= kd_rate <= 1.0:
        raise ValueError(f"method.kd_rate must lie in [0, 1], got {kd_rate}.")
    return kd_rate


def choice_from_config(config: ml_collections.ConfigDict, field: str, allowed: tuple[str, ...]) -> str:
    """``method.<field>``, checked to be one of ``allowed`` (a ValueError names the field and the choices)."""
    value = config[field]
    if value not in allowed:
        choices = " | ".join(repr(a) for a in allowed)
        raise ValueError(f"method.{field} must be one of {choices}, got {value!r}.")
    return value


def jsd_beta_from_config(config: ml_collections.ConfigDict) -> float:
    """``method.jsd_beta``, the β of the generalized JSD, checked to lie in [0, 1]."""
    beta = float(config.jsd_beta)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"method.jsd_beta must lie in [0, 1], got {beta}.")
    return beta


def temperature_from_config(config: ml_collections.ConfigDict) -> float:
    """``method.temperature``, the softmax temperature of both distributions, checked to be positive."""
    temperature = float(config.temperature)
    if not temperature > 0:
        raise ValueError(f"method.temperature must be > 0, got {temperature}.")
    return temperature


def make(config: ml_collections.ConfigDict) -> Method:
    divergence = losses.get_divergence(config.divergence)
    extra = divergence_arguments(config)
    kd_rate = kd_rate_from_config(config)
    temperature = temperature_from_config(config)
    vocab_size = int(config.vocab_size) if config.vocab_size else None
    fused = fused_options(config) if uses_fused(config) else None

    def kd_term(student, teacher, batch, ctx):
        if fused is not None:
            return losses.fused_kd_loss(
                student.output.hidden_states, student.model.lm_head_weight(),
                teacher.output.hidden_states, teacher.model.lm_head_weight(), batch["loss_mask"],
                divergence=config.divergence, temperature=temperature, normalizer=ctx.num_tokens,
                vocab_size=vocab_size, **fused, **extra,
            )
        student_logits = student.output.logits[..., :vocab_size]
        teacher_logits = teacher.output.logits[..., :vocab_size]
        kd_BxT = divergence(student_logits, teacher_logits, temperature=temperature, **extra)
        return losses.token_mean(kd_BxT, batch["loss_mask"], normalizer=ctx.num_tokens)

    def loss(method_params, batch, student, teacher, ctx):
        del method_params
        ce = response_cross_entropy(student, batch, ctx, fused=fused)
        kd = kd_term(student, teacher, batch, ctx)
        total = (1.0 - kd_rate) * ce + kd_rate * kd
        return total, {"ce": ce, "kd": kd}

    no_logits = {"return_logits": False} if fused is not None else {}
    return Method(name="kd", loss=loss, student_call=no_logits, teacher_call=no_logits)
