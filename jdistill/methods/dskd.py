r"""Dual-Space Knowledge Distillation (DSKD), same vocabulary; Zhang et al., 2024.

Both models' last hidden states (after the final norm) ``h_s`` ``[B, T, d_s]``
and ``h_t`` ``[B, T, d_t]`` are projected into the other model's space and read
out by the other model's LM head, so each distribution is compared in one
space with one head:

* student space: ``z_t2s = P_t2s(h_t) · sg(W_s)`` (student head stop-gradient),

  .. math:: L_{ce\_t2s} = CE(z_{t2s}, y), \qquad
            L_{kd\_stu} = D\big(\mathrm{softmax}(sg(z_{t2s})/τ) \,\|\, \mathrm{softmax}(z_s/τ)\big)

  ``L_ce_t2s`` is the only term that trains ``P_t2s``; ``L_kd_stu`` trains
  only the student (any divergence of :mod:`jdistill.losses`);
* teacher space: ``z_s2t = P_s2t(h_s) · W_t`` (the frozen teacher head; the
  gradient flows through it into ``P_s2t`` and the student),

  .. math:: L_{kd\_tea} = \mathrm{FKL}\big(\mathrm{softmax}(z_t/τ) \,\|\, \mathrm{softmax}(z_{s2t}/τ)\big)

``method.projector_init='pseudo_inverse'`` starts ``P_t2s`` at DSKDv2's
bias-free ``W_t W_s^+`` (teacher logits read out through the student head);
``'default'`` draws both projectors uniformly.

Total ``L = (1 - kd_rate) · CE(z_s, y) + kd_rate · (L_kd_stu + L_ce_t2s + w · L_kd_tea)``, with ``w =
method.teacher_space_weight`` (1 in DSKD; 0 is the ablation without the teacher space);
every term sums over response tokens and divides by the global student count
``ctx.num_tokens``. Logits are compared over the shared ``vocab_size`` rows
(a padded head is truncated to the tokenizer's vocabulary).
"""

from __future__ import annotations

import dataclasses

import jax

from jdistill import losses
from jdistill.methods import terms
from jdistill.methods.base import Method, ModelFacts
from jdistill.methods.projectors import PROJECTOR_INITS, apply_linear, init_projectors
from jdistill.methods.settings import KDSettings, setting


def dual_space_terms(method_params, batch, student, teacher, ctx, *, divergence, temperature, vocab_size):
    """The three DSKD terms (each normalised by ``ctx.num_tokens``) as a dict."""
    sg = jax.lax.stop_gradient
    mask_BxT = batch["loss_mask"]
    targets_BxT = batch["targets"]
    z_s_BxTxV = student.output.logits[..., :vocab_size]
    z_t_BxTxV = sg(teacher.output.logits[..., :vocab_size])
    w_s_DsxV = sg(student.model.lm_head_weight()[:, :vocab_size])
    w_t_DtxV = sg(teacher.model.lm_head_weight()[:, :vocab_size])
    h_s_BxTxDs = student.output.hidden_states
    h_t_BxTxDt = sg(teacher.output.hidden_states)

    z_t2s_BxTxV = apply_linear(method_params["t2s"], h_t_BxTxDt) @ w_s_DsxV.astype("float32")
    ce_t2s_BxT = losses.token_cross_entropy(z_t2s_BxTxV, targets_BxT)
    kd_stu_BxT = divergence(z_s_BxTxV, sg(z_t2s_BxTxV), temperature=temperature)

    z_s2t_BxTxV = apply_linear(method_params["s2t"], h_s_BxTxDs) @ w_t_DtxV.astype("float32")
    kd_tea_BxT = losses.forward_kl(z_s2t_BxTxV, z_t_BxTxV, temperature=temperature)

    mean = lambda v: losses.token_mean(v, mask_BxT, normalizer=ctx.num_tokens)  # noqa: E731
    return {"ce_t2s": mean(ce_t2s_BxT), "kd_stu": mean(kd_stu_BxT), "kd_tea": mean(kd_tea_BxT)}


@dataclasses.dataclass(frozen=True)
class Settings(KDSettings):
    """DSKD's scripts (``scripts/gpt2/dskd_gpt2_base.sh``): forward KL, kd_rate 0.5, τ 2."""

    temperature: float = setting(2.0, "Divides student and teacher logits in the divergences (DSKD's KD_TEMP).")
    teacher_space_weight: float = setting(
        1.0, "Weight of the teacher-space term L_kd_tea in the KD sum: 1 = DSKD; 0 drops it (the paper's ablation).")
    projector_init: str = setting("default", "'default' (uniform, DSKD) | 'pseudo_inverse' (DSKDv2: t2s = W_t pinv(W_s)).")

    def __post_init__(self):
        super().__post_init__()
        if self.projector_init not in PROJECTOR_INITS:
            raise ValueError(f"method.projector_init must be one of {PROJECTOR_INITS}, got {self.projector_init!r}.")


def make(settings: Settings, facts: ModelFacts = ModelFacts()) -> Method:
    divergence = terms.bound_divergence(settings)
    temperature = float(settings.temperature)
    vocab_size = terms.vocab_rows(settings, facts)

    def init_params(key, student, teacher):
        return init_projectors(key, student, teacher, how=settings.projector_init, vocab_size=vocab_size)

    def loss(method_params, batch, student, teacher, ctx):
        ce = terms.response_cross_entropy(student, batch, ctx)
        dual = dual_space_terms(
            method_params, batch, student, teacher, ctx,
            divergence=divergence, temperature=temperature, vocab_size=vocab_size,
        )
        kd = dual["kd_stu"] + dual["ce_t2s"] + settings.teacher_space_weight * dual["kd_tea"]
        return terms.mix(settings, ce, kd), {"ce": ce, "kd": kd, **dual}

    return Method(name="dskd", loss=loss, init_params=init_params, packable=True)
