r"""Universal Logit Distillation (ULD) across vocabularies; Boizard et al., 2024.

The ``i``-th response token of the student is paired with the ``i``-th
response token of the teacher (``uld_teacher_index`` / ``uld_mask``, computed on
the host by :func:`jdistill.data.alignment.positional_response_alignment`).
Both probability vectors are sorted in decreasing order and the shorter one is
zero-padded to the longer vocabulary, so the loss only compares the shapes of
the two distributions:

.. math:: \mathrm{ULD}_i = \sum_{k} \big|\, \mathrm{sort}(q_i)_k - \mathrm{sort}(p_{j(i)})_k \big|,
          \qquad q = \mathrm{softmax}(z_s/τ),\ p = \mathrm{softmax}(z_t/τ)

``L = (1 - kd_rate) · CE(z_s, y) + kd_rate · Σ_i m_i ULD_i / N`` with ``N`` the
global student response-token count.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jdistill import losses
from jdistill.methods import terms
from jdistill.methods.base import Method, ModelFacts
from jdistill.methods.settings import KDSettings


def sorted_probs_desc(logits_BxTxV, temperature):
    """``softmax(z/τ)`` sorted in decreasing order along the vocabulary, float32."""
    probs = jnp.exp(losses.log_probs(logits_BxTxV, temperature=temperature))
    return -jnp.sort(-probs, axis=-1)


def pad_vocab(probs_BxTxV, size):
    """Zero-pads the vocabulary axis to ``size`` entries."""
    extra = size - probs_BxTxV.shape[-1]
    return jnp.pad(probs_BxTxV, [(0, 0)] * (probs_BxTxV.ndim - 1) + [(0, extra)])


def uld_distance(student_logits_BxSxVs, teacher_logits_BxSxVt, temperature):
    """Per-token ``Σ_k |sort(q)_k − sort(p)_k|`` between vocabularies of any sizes ``[B, S]``."""
    q = sorted_probs_desc(student_logits_BxSxVs, temperature)
    p = sorted_probs_desc(teacher_logits_BxSxVt, temperature)
    size = max(q.shape[-1], p.shape[-1])
    return jnp.sum(jnp.abs(pad_vocab(q, size) - pad_vocab(p, size)), axis=-1)


def gather_positions(values_BxTx_, index_BxS):
    """``values[b, index[b, s]]`` for every ``(b, s)``: ``[B, S, ...]``."""
    return jax.vmap(lambda v, i: v[i])(values_BxTx_, index_BxS)


@dataclasses.dataclass(frozen=True)
class Settings(KDSettings):
    """DSKD's ULD baseline (``scripts/gpt2/uld_gpt2_base.sh``): kd_rate 0.5, no temperature (τ = 1)."""


def make(settings: Settings, facts: ModelFacts = ModelFacts()) -> Method:
    del facts  # the two vocabularies differ; ULD compares sorted distributions of any sizes
    temperature = float(settings.temperature)

    def loss(method_params, batch, student, teacher, ctx):
        del method_params
        ce = terms.response_cross_entropy(student, batch, ctx)
        z_t_BxSxVt = gather_positions(jax.lax.stop_gradient(teacher.output.logits), batch["uld_teacher_index"])
        uld_BxS = uld_distance(student.output.logits, z_t_BxSxVt, temperature)
        kd = losses.token_mean(uld_BxS, batch["uld_mask"], normalizer=ctx.num_tokens)
        return terms.mix(settings, ce, kd), {"ce": ce, "kd": kd}

    return Method(name="uld", loss=loss, cross_vocabulary=True)
