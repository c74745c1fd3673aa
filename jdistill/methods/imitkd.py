"""ImitKD (Lin et al., 2020): distillation on a mix of dataset and student-generated sequences.

Imitation learning for autoregressive KD: the student is trained, with the
teacher's next-token distribution as the target, on sequences drawn from a
mixture of the data and its own generations. Each step trains on the current
student's samples for the step's prompts with probability
``p = student_probability + (student_probability_end - student_probability) · progress``
(the data-mixing weight β_i = 1 - p decays linearly, from all data to all
student samples with the defaults of ``configs/imitkd.py``), else on the
dataset responses. The loss is ``method.divergence`` (forward KL, as the
paper) per response token. Coin flips are keyed by (seed, step).
"""

from __future__ import annotations

import dataclasses

from jdistill.methods.base import Method, ModelFacts
from jdistill.methods.data_policy import StudentSamples
from jdistill.methods.divergence_loss import make_divergence_method
from jdistill.methods.settings import DivergenceSettings, check_range, setting


@dataclasses.dataclass(frozen=True)
class Settings(DivergenceSettings):
    """ImitKD: forward KL on a data mixture that moves from the dataset to student samples."""

    student_probability: float = setting(0.0, "Chance a step trains on student samples at the start of training.")
    student_probability_end: float = setting(1.0, "That chance at the end of training (linear in progress).")

    def __post_init__(self):
        super().__post_init__()
        check_range("student_probability", self.student_probability, 0.0, 1.0)
        check_range("student_probability_end", self.student_probability_end, 0.0, 1.0)


def make(settings: Settings, facts: ModelFacts = ModelFacts()) -> Method:
    policy = StudentSamples(float(settings.student_probability), float(settings.student_probability_end))
    return make_divergence_method(settings, facts, name="imitkd", data_policy=policy)
