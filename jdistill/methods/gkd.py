"""GKD (Agarwal et al., 2024): on-policy distillation with the generalized JSD.

Each step, with probability λ (``method.student_probability``) the step's
prompts are answered on the fly by the current student (jitted sampler,
``on_policy.*`` settings; TRL samples at temperature 0.9) and the student is
trained on its own samples; otherwise on the dataset responses or, with
``method.seq_kd``, on teacher samples of the same prompts. The loss is the
generalized JSD(β) (``method.jsd_beta``; β = 0 is forward KL, β = 1 reverse
KL) per response token, normalised by the step's global response-token count.
The coin flips come from a host RNG keyed by (seed, step), so a resumed run
makes the same choices.
"""

from __future__ import annotations

import ml_collections

from jdistill.methods.base import Method
from jdistill.methods.data_policy import StudentSamples
from jdistill.methods.divergence_loss import make_divergence_method


def make(config: ml_collections.ConfigDict) -> Method:
    if config.divergence != "generalized_jsd":
        raise ValueError(
            f"GKD's loss is the generalized JSD; set method.divergence=generalized_jsd (got {config.divergence!r}) "
            "and choose method.jsd_beta (0 = forward KL, 1 = reverse KL)."
        )
    probability = float(config.student_probability)
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"method.student_probability (GKD's λ) must lie in [0, 1], got {probability}.")
    policy = StudentSamples(probability, probability, teacher_samples=bool(config.seq_kd))
    return make_divergence_method(config, name="gkd", data_policy=policy)
