"""DistiLLM (Ko et al., 2024): skew KL with adaptive off-policy student samples.

The loss is the skew KL ``KL(p ‖ α p + (1 - α) q)`` (``method.divergence=
skew_forward_kl``) or the skew reverse KL ``KL(q ‖ (1 - α) p + α q)``
(``skew_reverse_kl``), α = ``method.skew_alpha`` (0.1), per response token.

The data follow the adaptive off-policy rule
(:class:`~jdistill.methods.data_policy.AdaptiveReplay`): each step draws
``r ~ U(0, 1)`` from a host RNG keyed by (seed, step); with
``φ_s = φ (1 - t / T)`` (``t`` the 1-based step, as the release's
``global_step``), ``r < φ_s`` (or ``r < φ`` while the replay buffer is not
full) generates fresh student samples for the step's prompts (temperature 1,
top-p 1 in the paper), pushes them into the replay buffer
(``method.replay_capacity``, 1000) and trains on them; else ``r < φ`` trains on
a random batch from the buffer; else on the dataset batch. φ starts at
``method.phi_init`` (0 for GPT-2 in the paper) and moves only at evaluations,
by :func:`update_phi`: the student's cross-entropy on the gold validation
responses (the evaluation's ``student_ce``) is measured once before training
and at every evaluation; when it is at least ``method.phi_trigger`` (0.1)
above the reference, φ rises by ``method.phi_increment`` (0.1, at most 1) and
the reference becomes the current loss — otherwise the reference stays.
"""

from __future__ import annotations

import dataclasses

from jdistill.methods.base import Method, ModelFacts
from jdistill.methods.data_policy import AdaptiveReplay
from jdistill.methods.divergence_loss import make_divergence_method
from jdistill.methods.settings import DivergenceSettings, check_range, setting

SKEW_DIVERGENCES = ("skew_forward_kl", "skew_reverse_kl")


@dataclasses.dataclass(frozen=True)
class PhiState:
    """DistiLLM's adaptive off-policy state between evaluations.

    Attributes:
      phi: the probability φ of training on student samples.
      reference_loss: the validation loss the trigger compares with (``None``
        before the first evaluation).
    """

    phi: float
    reference_loss: float | None = None


def update_phi(state: PhiState, validation_loss: float, *, trigger: float = 0.1,
               increment: float = 0.1) -> PhiState:
    """DistiLLM's φ rule after one evaluation, as the authors' release computes it.

    The release (``jongwooko/distillm``, ``finetune.py``, ``finetune``) evaluates
    the student's cross-entropy on the gold validation responses once before
    training (``prev_avg_loss = evaluate(...)`` at step 0) and then at every
    evaluation::

        if curr_avg_loss >= prev_avg_loss + loss_eps:
            adaptive_threshold = min(adaptive_threshold + 0.1, 1.0)
            prev_avg_loss = curr_avg_loss

    so the reference is replaced only when the trigger fires: a slow upward
    drift accumulates against the last reference until it does. The first
    evaluation (no reference yet) only sets the reference.

    Args:
      state: φ and the reference before this evaluation.
      validation_loss: the student's held-out cross-entropy now.
      trigger: ``loss_eps`` (0.1): how far above the reference the loss must be.
      increment: the rise of φ when it fires (0.1 in the release); φ stays <= 1.

    Returns:
      The new :class:`PhiState`.
    """
    loss = float(validation_loss)
    if state.reference_loss is None:
        return PhiState(state.phi, loss)
    if loss >= state.reference_loss + trigger:
        return PhiState(min(state.phi + increment, 1.0), loss)
    return state


@dataclasses.dataclass(frozen=True)
class Settings(DivergenceSettings):
    """The release's GPT-2 recipe (``scripts/gpt2/distillm/train_0.1B_1.5B.sh``)."""

    divergence: str = setting("skew_forward_kl", "'skew_forward_kl' (the paper's SKL) | 'skew_reverse_kl' (SRKL).")
    replay_capacity: int = setting(1000, "Replay buffer of student samples (sequences, first in first out).")
    phi_init: float = setting(0.0, "Initial probability phi of training on student samples (--init-threshold).")
    phi_increment: float = setting(0.1, "Rise of phi when the validation-loss trigger fires (phi <= 1).")
    phi_trigger: float = setting(0.1, "Rise of the validation CE over its reference that raises phi (--loss-eps).")

    def __post_init__(self):
        super().__post_init__()
        if self.divergence not in SKEW_DIVERGENCES:
            raise ValueError(
                f"DistiLLM trains with a skew divergence; set method.divergence to one of {SKEW_DIVERGENCES} "
                f"(got {self.divergence!r})."
            )
        check_range("replay_capacity", self.replay_capacity, 1)
        check_range("phi_init", self.phi_init, 0.0, 1.0)
        check_range("phi_increment", self.phi_increment, 0.0, 1.0)


def make(settings: Settings, facts: ModelFacts = ModelFacts()) -> Method:
    policy = AdaptiveReplay(
        capacity=int(settings.replay_capacity), phi_init=float(settings.phi_init),
        increment=float(settings.phi_increment), trigger=float(settings.phi_trigger),
    )
    return make_divergence_method(settings, facts, name="distillm", data_policy=policy)
