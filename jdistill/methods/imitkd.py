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

import ml_collections

from jdistill.methods.base import Method
from jdistill.methods.data_policy import StudentSamples
from jdistill.methods.divergence_loss import make_divergence_method


def make(config: ml_collections.ConfigDict) -> Method:
    start, end = float(config.student_probability), float(config.student_probability_end)
    for field, value in (("student_probability", start), ("student_probability_end", end)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"method.{field} must lie in [0, 1], got {value}.")
    return make_divergence_method(config, name="imitkd", data_policy=StudentSamples(start, end))
