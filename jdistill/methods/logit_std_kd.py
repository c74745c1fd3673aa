r"""Logit-standardised KD (Sun et al., CVPR 2024, "Logit Standardization in Knowledge Distillation").

Vanilla KD asks the student to match the teacher's logits in range and
variance as well as in their relations, because both share one temperature.
Logit standardisation z-scores each model's logits over the vocabulary before
the softmax, so only the relations carry over:

.. math::
    \mathcal{Z}(z) = \frac{z - \bar z}{\epsilon + \sigma(z)}, \qquad
    \mathrm{KD}_i = \tau^2\, \mathrm{KL}\big(\mathrm{softmax}(\mathcal{Z}(z^t_i)/\tau) \,\big\|\,
                                             \mathrm{softmax}(\mathcal{Z}(z^s_i)/\tau)\big)

with ``σ`` the unbiased standard deviation over the compared vocabulary rows and
``ε = 1e-7``, as the authors' release computes it (``mdistiller/distillers/KD.py``:
``normalize`` and ``kd_loss``, which also multiplies by ``τ²``), and

.. math:: L = (1 - kd\_rate)\,\mathrm{CE}(z_s, y) + kd\_rate\, \frac{1}{N}\sum_i M_i\, \mathrm{KD}_i .

``τ`` is ``method.temperature`` (the release's ``--base-temp``, 2); the
release weighs CE and KD by 0.1 and 9 on CIFAR-100, image-classification
settings that do not carry over, so the mix is DSKD's ``kd_rate`` 0.5. Both
models share one tokenizer; the fused (chunked) path is not available, since
the standardisation needs each position's whole logit vector.

This module is the worked example of ``docs/adding_a_method.md``: a loss-only
method is this file plus one registry line.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from jdistill import losses
from jdistill.methods import terms
from jdistill.methods.base import Method, ModelFacts
from jdistill.methods.settings import KDSettings, setting

STD_EPSILON = 1e-7  # the release's ``1e-7 + stdv``


@dataclasses.dataclass(frozen=True)
class Settings(KDSettings):
    """The release's defaults: base temperature 2, the τ² factor; DSKD's kd_rate 0.5 mix."""

    temperature: float = setting(2.0, "Base temperature applied after standardisation (the release's --base-temp).")
    temperature_squared: bool = setting(True, "Multiply the KD term by temperature^2, as the release's kd_loss.")

    def __post_init__(self):
        super().__post_init__()
        if self.divergence != "forward_kl":
            raise ValueError(
                f"logit_std_kd compares standardised logits by forward KL; method.divergence must be 'forward_kl', "
                f"got {self.divergence!r}."
            )
        if self.fused == "on":
            raise ValueError("method.fused='on' is not available for logit_std_kd (standardising needs each "
                             "position's whole logit vector); use method.fused='off' or 'auto'.")


def standardize(logits_BxTxV):
    """``(z - mean(z)) / (1e-7 + std(z))`` over the vocabulary, in float32 (unbiased std, as torch's)."""
    z = logits_BxTxV.astype(jnp.float32)
    mean = jnp.mean(z, axis=-1, keepdims=True)
    std = jnp.std(z, axis=-1, keepdims=True, ddof=1)
    return (z - mean) / (STD_EPSILON + std)


def make(settings: Settings, facts: ModelFacts = ModelFacts()) -> Method:
    vocab_size = terms.vocab_rows(settings, facts)
    temperature = float(settings.temperature)
    scale = temperature**2 if settings.temperature_squared else 1.0

    def loss(method_params, batch, student, teacher, ctx):
        del method_params
        ce = terms.response_cross_entropy(student, batch, ctx)
        z_s = standardize(student.output.logits[..., :vocab_size])
        z_t = standardize(teacher.output.logits[..., :vocab_size])
        kd_BxT = scale * losses.forward_kl(z_s, z_t, temperature=temperature)
        kd = losses.token_mean(kd_BxT, batch["loss_mask"], normalizer=ctx.num_tokens)
        return terms.mix(settings, ce, kd), {"ce": ce, "kd": kd}

    return Method(name="logit_std_kd", loss=loss, packable=True)
