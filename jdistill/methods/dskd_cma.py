r"""DSKD with cross-model attention (CMA): dual-space KD across different vocabularies.

Student and teacher tokenize the same text independently (``input_ids`` /
``teacher_input_ids``, with the same prompt masking). Cross-model attention
(:func:`jdistill.losses.cross_model_attention`) re-expresses each model's
hidden states on the other's token grid from index embeddings
``e = [E(x); E(y)]`` (input and next-token target, stop-gradient), attending
only between response tokens of the same sample:

* student space: ``z_t2s = CMA_t2s(h_t) · sg(W_s)`` ``[B, Ts, Vs]``,

  .. math:: L_{ce\_t2s} = \sum_i M_i\, CE(z_{t2s,i}, y_i), \qquad
            L_{kd\_stu} = \sum_i M_i \, 1[\arg\max z_{t2s,i} = y_i]\,
                          D(sg(z_{t2s,i}) \,\|\, z_{s,i})

  (KD only where the projected teacher predicts the gold token);
* teacher space: ``z_s2t = CMA_s2t(h_s) · W_t`` ``[B, Tt, Vt]`` (frozen teacher head),

  .. math:: L_{kd\_tea} = \sum_j M'_j \, \mathrm{FKL}(z_{t,j} \,\|\, z_{s2t,j})

``L = (1 - kd_rate) · CE + kd_rate · (L_kd_stu + L_ce_t2s + w · L_kd_tea)`` (``w =
method.teacher_space_weight``, 1), every
sum divided by the global student response-token count (as the reference).
``P_query`` is trained by ``L_ce_t2s`` and ``L_kd_tea`` (the scores are shared).

The index embeddings are looked up, as in DSKD's release, at the token ids of
response positions and at id 0 everywhere else (its "formal" ids), so that the
scalar standard deviations that scale ``K`` and ``V_t``
(``method.cma_std_over``: ``'all'`` padded positions, the release's, or
``'response'`` positions only) see what the release sees.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jdistill import losses
from jdistill.losses import CMA_STD_OVER
from jdistill.methods import terms
from jdistill.methods.base import Method, ModelFacts
from jdistill.methods.projectors import init_cross_model_attention_params
from jdistill.methods.settings import KDSettings, check_choice, setting


def formal_ids(ids_BxT, mask_BxT):
    """The token ids at response positions, 0 elsewhere (DSKD's ``formal_input`` / ``formal_target``)."""
    return jnp.where(mask_BxT > 0, ids_BxT, 0)


def cma_terms(method_params, batch, student, teacher, ctx, *, divergence, temperature, std_over="all"):
    """The three DSKD-CMA terms (each normalised by ``ctx.num_tokens``) and the gate rate."""
    sg = jax.lax.stop_gradient
    mask_s_BxS = batch["loss_mask"]
    mask_t_BxT = batch["teacher_loss_mask"]
    targets_s_BxS = batch["targets"]
    e_s_VsxDs = sg(student.model.embedding_table())
    e_t_VtxDt = sg(teacher.model.embedding_table())
    w_s_DsxVs = sg(student.model.lm_head_weight()).astype(jnp.float32)
    w_t_DtxVt = sg(teacher.model.lm_head_weight()).astype(jnp.float32)

    attention = losses.cross_model_attention(
        method_params,
        student_input_embeds=e_s_VsxDs[formal_ids(batch["input_ids"], mask_s_BxS)],
        student_target_embeds=e_s_VsxDs[formal_ids(targets_s_BxS, mask_s_BxS)],
        student_hidden=student.output.hidden_states,
        student_mask=mask_s_BxS > 0,
        teacher_input_embeds=e_t_VtxDt[formal_ids(batch["teacher_input_ids"], mask_t_BxT)],
        teacher_target_embeds=e_t_VtxDt[formal_ids(batch["teacher_targets"], mask_t_BxT)],
        teacher_hidden=sg(teacher.output.hidden_states),
        teacher_mask=mask_t_BxT > 0,
        std_over=std_over,
    )
    z_s_BxSxVs = student.output.logits
    z_t2s_BxSxVs = attention.t2s_hidden @ w_s_DsxVs
    ce_t2s_BxS = losses.token_cross_entropy(z_t2s_BxSxVs, targets_s_BxS)
    gate_BxS = (jnp.argmax(z_t2s_BxSxVs, axis=-1) == targets_s_BxS).astype(jnp.float32)
    kd_stu_BxS = gate_BxS * divergence(z_s_BxSxVs, sg(z_t2s_BxSxVs), temperature=temperature)

    z_s2t_BxTxVt = attention.s2t_hidden @ w_t_DtxVt
    kd_tea_BxT = losses.forward_kl(z_s2t_BxTxVt, sg(teacher.output.logits), temperature=temperature)

    n = ctx.num_tokens
    return {
        "ce_t2s": losses.token_mean(ce_t2s_BxS, mask_s_BxS, normalizer=n),
        "kd_stu": losses.token_mean(kd_stu_BxS, mask_s_BxS, normalizer=n),
        "kd_tea": losses.token_mean(kd_tea_BxT, mask_t_BxT, normalizer=n),
        "t2s_acc": losses.token_mean(gate_BxS, mask_s_BxS, normalizer=n),
    }


@dataclasses.dataclass(frozen=True)
class Settings(KDSettings):
    """DSKD's scripts (``scripts/gpt2/dskd_cma_gpt2_base.sh``): forward KL, kd_rate 0.5, τ 2."""

    temperature: float = setting(2.0, "Divides student and teacher logits in the divergences (DSKD's KD_TEMP).")
    teacher_space_weight: float = setting(
        1.0, "Weight of the teacher-space term L_kd_tea in the KD sum: 1 = DSKD; 0 drops it (the paper's ablation).")
    cma_std_over: str = setting("all", "Scalar stds of K and V_t: 'all' (the whole padded tensor, the release) | 'response'.")

    def __post_init__(self):
        super().__post_init__()
        check_choice("cma_std_over", self.cma_std_over, CMA_STD_OVER)


def make(settings: Settings, facts: ModelFacts = ModelFacts()) -> Method:
    del facts  # the two vocabularies differ: every term uses each model's own full head
    divergence = terms.bound_divergence(settings)
    temperature = float(settings.temperature)

    def init_params(key, student, teacher):
        return init_cross_model_attention_params(
            key, student_dim=student.config.hidden_size, teacher_dim=teacher.config.hidden_size
        )

    def loss(method_params, batch, student, teacher, ctx):
        ce = terms.response_cross_entropy(student, batch, ctx)
        cma = cma_terms(method_params, batch, student, teacher, ctx, divergence=divergence,
                        temperature=temperature, std_over=settings.cma_std_over)
        kd = cma["kd_stu"] + cma["ce_t2s"] + settings.teacher_space_weight * cma["kd_tea"]
        return terms.mix(settings, ce, kd), {"ce": ce, "kd": kd, **cma}

    return Method(name="dskd_cma", loss=loss, cross_vocabulary=True, init_params=init_params)
