"""Which data a method trains on when the dataset alone is not it: the on-policy data specs.

Methods stay pure losses. A method that trains on generated responses says
so with one of the specs below in :attr:`jdistill.methods.base.Method.data_policy`;
:mod:`jdistill.engine.on_policy` then generates the responses with the jitted
sampler and hands them to the one train step as ordinary batch arrays:

* :class:`EpochResponses` (DistiLLM-2's batched on-policy data): at the start
  of every epoch the teacher and the current student answer every training
  prompt; a step of ``B`` prompts trains on ``2B`` rows, the ``B`` prompts
  with their teacher responses and the same prompts with their student
  responses, flagged per row (:data:`STUDENT_ROW`), plus the per-half global
  counts the loss is normalised by and the curriculum's reference gaps.
* :class:`StudentSamples` (GKD, ImitKD): each step, with probability
  ``p(progress)``, the batch's prompts are answered by the current student on
  the fly; otherwise the dataset batch (or, for GKD's ``seq_kd``, teacher
  samples) is used.
* :class:`AdaptiveReplay` (DistiLLM): the adaptive off-policy rule with a
  replay buffer of student samples and a probability φ raised by the
  validation loss.

Rows built from generated responses have the usual arrays (``input_ids``,
``attention_mask``, ``targets``, ``loss_mask`` over the response tokens,
EOS included when the response ended).
"""

from __future__ import annotations

import dataclasses

# Per-row ``[B]`` float32 arrays of an EpochResponses batch.
STUDENT_ROW = "on_policy_student_row"  # 1 on a student-response row, 0 on a teacher-response row.
HALF_SEQUENCES = "on_policy_half_sequences"  # Global number of rows with response tokens in the row's half.
HALF_TOKENS = "on_policy_half_tokens"  # Global number of response tokens in the row's half.
CURRICULUM_ON = "on_policy_curriculum_on"  # 1 once the reference gap of the row's half is known.
REFERENCE_GAP = "on_policy_reference_gap"  # The reference gap m of the row's half (0 until known).
EPOCH_RESPONSE_KEYS = (STUDENT_ROW, HALF_SEQUENCES, HALF_TOKENS, CURRICULUM_ON, REFERENCE_GAP)

# Step metrics the loss reports (per-half means) from which the engine measures the
# curriculum's reference gaps during the first epoch: teacher-response rows, student-response rows.
GAP_METRICS = ("gap_teacher_responses", "gap_student_responses")


@dataclasses.dataclass(frozen=True)
class EpochResponses:
    """DistiLLM-2: teacher and student answer every training prompt at each epoch start.

    Attributes:
      measure_reference_gap: average the loss's :data:`GAP_METRICS` over the
        first epoch into the reference gaps, and switch the curriculum on
        (:data:`CURRICULUM_ON`) from the second epoch.
    """

    measure_reference_gap: bool = True


@dataclasses.dataclass(frozen=True)
class StudentSamples:
    """GKD / ImitKD: fresh student samples with probability ``start + (end - start) * progress``.

    Attributes:
      probability_start: the probability at the start of training (GKD's λ).
      probability_end: the probability at the end (equal to the start for GKD).
      teacher_samples: steps without student samples train on teacher samples
        of the same prompts instead of the dataset responses (GKD's ``seq_kd``).
    """

    probability_start: float
    probability_end: float
    teacher_samples: bool = False

    def probability(self, progress: float) -> float:
        progress = min(max(float(progress), 0.0), 1.0)
        return self.probability_start + (self.probability_end - self.probability_start) * progress


@dataclasses.dataclass(frozen=True)
class AdaptiveReplay:
    """DistiLLM's adaptive off-policy approach.

    Each step draws ``r ~ U(0, 1)``; with ``φ_s = φ (1 - progress)``: ``r < φ_s``
    (or ``r < φ`` while the buffer is not full) trains on fresh student samples
    and pushes them into the buffer; else ``r < φ`` trains on a random replay
    batch; else on the dataset batch. At each evaluation, a validation loss at
    least ``trigger`` above the previous one raises φ by ``increment`` (at most 1).

    Attributes:
      capacity: replay buffer size in sequences (first in, first out).
      phi_init: the initial φ.
      increment: how much φ rises when the trigger fires.
      trigger: the rise of the validation loss that fires it.
    """

    capacity: int = 1000
    phi_init: float = 0.0
    increment: float = 0.1
    trigger: float = 0.1
