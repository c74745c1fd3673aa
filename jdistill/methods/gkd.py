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

import dataclasses

from jdistill.methods.base import Method, ModelFacts
from jdistill.methods.data_policy import StudentSamples
from jdistill.methods.divergence_loss import make_divergence_method
from jdistill.methods.settings import DivergenceSettings, check_range, setting


@dataclasses.dataclass(frozen=True)
class Settings(DivergenceSettings):
    """TRL's GKDTrainer defaults: λ = 0.5, β = 0.5."""

    divergence: str = setting("generalized_jsd", "GKD's loss: the generalized JSD (method.jsd_beta).")
    student_probability: float = setting(0.5, "λ: chance a step trains on fresh student samples.")
    seq_kd: bool = setting(False, "Steps without student samples train on teacher samples, not dataset responses.")

    def __post_init__(self):
        super().__post_init__()
        if self.divergence != "generalized_jsd":
            raise ValueError(
                f"GKD's loss is the generalized JSD; set method.divergence=generalized_jsd (got {self.divergence!r}) "
                "and choose method.jsd_beta (0 = forward KL, 1 = reverse KL)."
            )
        check_range("student_probability", self.student_probability, 0.0, 1.0)


def make(settings: Settings, facts: ModelFacts = ModelFacts()) -> Method:
    probability = float(settings.student_probability)
    policy = StudentSamples(probability, probability, teacher_samples=bool(settings.seq_kd))
    return make_divergence_method(settings, facts, name="gkd", data_policy=policy)
