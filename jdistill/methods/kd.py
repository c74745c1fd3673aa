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
from jdistill.methods.sft import response_cross_entropy

# divergence name -> (kernel keyword, method config field) of its one extra argument.
DIVERGENCE_ARGUMENTS = {
    "generalized_jsd": ("beta", "jsd_beta"),
    "skew_forward_kl": ("alpha", "skew_alpha"),
    "skew_reverse_kl": ("alpha", "skew_alpha"),
    "adaptive_kl": ("mu", "akl_mu"),
}


def divergence_from_config(config: ml_collections.ConfigDict):
    """The configured divergence with its extra argument bound: ``f(s, t, temperature=)``."""
    kernel = losses.get_divergence(config.divergence)
    argument = DIVERGENCE_ARGUMENTS.get(config.divergence)
    if argument is None:
        return kernel
    keyword, field = argument
    value = config[field]

    def bound(student_logits, teacher_logits, **kwargs):
        return kernel(student_logits, teacher_logits, **{keyword: value}, **kwargs)

    return bound


def make(config: ml_collections.ConfigDict) -> Method:
    divergence = divergence_from_config(config)
    kd_rate = float(config.kd_rate)
    temperature = float(config.temperature)
    vocab_size = int(config.vocab_size) if config.vocab_size else None
    if not 0.0 <= kd_rate <= 1.0:
        raise ValueError(f"method.kd_rate must lie in [0, 1], got {kd_rate}.")

    def loss(method_params, batch, student, teacher, ctx):
        del method_params
        ce = response_cross_entropy(student, batch, ctx)
        student_logits = student.output.logits[..., :vocab_size]
        teacher_logits = teacher.output.logits[..., :vocab_size]
        kd_BxT = divergence(student_logits, teacher_logits, temperature=temperature)
        kd = losses.token_mean(kd_BxT, batch["loss_mask"], normalizer=ctx.num_tokens)
        total = (1.0 - kd_rate) * ce + kd_rate * kd
        return total, {"ce": ce, "kd": kd}

    return Method(name="kd", loss=loss)
