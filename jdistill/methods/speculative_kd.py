"""Speculative KD (Xu et al., 2024, "Speculative Knowledge Distillation: Bridging the Teacher-Student Gap
Through Interleaved Sampling", ICLR 2025): on-policy data from interleaved student/teacher sampling.

Data. Each step (with probability ``method.student_probability``, 1 by
default; else the dataset batch) the step's prompts are answered by the
student and the teacher together, in one jitted two-model decode
(:func:`jdistill.sampling.decode_paired`, rule ``'speculative'``): at every
position the student proposes ``y ~ q(· | prefix)`` (``method.sampling.*``);
``y`` is kept when it is among the teacher's top ``K = method.teacher_top_k``
tokens at that prefix, else a token drawn from the teacher ``p(· | prefix)``
replaces it; both models continue from the kept token. The paper verifies
blocks of student tokens at once as speculative decoding does; verifying one
token at a time and continuing from the replacement draws the same sequences,
since a block is cut at its first rejected token. ``K = 1`` keeps only the
teacher's argmax (close to supervised KD on teacher samples); ``K = V`` keeps
every proposal (plain on-policy KD): the paper's interpolation between the
two. The step metric ``replaced_fraction`` is the share of generated tokens
the teacher replaced (it falls as the student improves: the paper's
adaptive move from teacher-like to student-like data).

Loss. ``method.divergence`` (forward KL by default) between the teacher's
and the student's next-token distributions per response token of those
sequences, normalised by the step's global response-token count
(:func:`jdistill.methods.divergence_loss.make_divergence_method`, as GKD).

Sources. No authors' release was available to read here; ``K = 25``, the
forward KL and sampling at temperature 1 are this module's reading of the
paper (its Algorithm 1 and experimental setup), not checked against a script.
"""

from __future__ import annotations

import dataclasses

from jdistill.methods.base import Method, ModelFacts
from jdistill.methods.divergence_loss import make_divergence_method
from jdistill.methods.settings import DivergenceSettings, RolloutSettings, check_range, setting
from jdistill.rollout import PairedSamplesFeed


@dataclasses.dataclass(frozen=True)
class Settings(DivergenceSettings):
    """Speculative KD: teacher top-K verification of student proposals; forward KL on the result."""

    divergence: str = setting("forward_kl", "The divergence on the interleaved samples (any jdistill.losses name).")
    teacher_top_k: int = setting(25, "K: a student proposal outside the teacher's top K is replaced by a teacher sample.")
    student_probability: float = setting(1.0, "Chance a step trains on interleaved samples (else the dataset batch).")
    sampling: RolloutSettings = setting(
        factory=lambda: RolloutSettings(temperature=1.0, top_p=1.0, top_k=0),
        help="Proposals and replacements are drawn at temperature 1, unfiltered.",
    )

    def __post_init__(self):
        super().__post_init__()
        check_range("teacher_top_k", self.teacher_top_k, 1)
        check_range("student_probability", self.student_probability, 0.0, 1.0)


def make(settings: Settings, facts: ModelFacts = ModelFacts()) -> Method:
    def make_feed(ctx):
        sampling = ctx.sampling_settings(**dataclasses.asdict(settings.sampling),
                                         setting="method.sampling.max_new_tokens")
        return PairedSamplesFeed(ctx, sampling, rule="speculative", method_name="speculative_kd",
                                 probability=float(settings.student_probability), top_k=int(settings.teacher_top_k))

    return make_divergence_method(settings, facts, name="speculative_kd", make_feed=make_feed)
