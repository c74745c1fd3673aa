"""On-policy data: the feed interface between the training loop and a method's generated data.

Below the methods and above data/sampling: a method's ``make_feed(context)``
builds its feed from these pieces (:mod:`jdistill.rollout.feed`: the interface,
its context and helpers; :mod:`jdistill.rollout.step_samples`: the per-step
sampler with a method's policy; :mod:`jdistill.rollout.paired_samples`: student and teacher sampling together;
:mod:`jdistill.rollout.replay_buffer`).
"""

from jdistill.rollout.feed import (
    COIN,
    DATASET,
    EPOCH_RESPONSES,
    REPLAY,
    REPLAY_PICK,
    SOURCE_NAMES,
    STUDENT_KEY,
    STUDENT_SAMPLES,
    TEACHER_KEY,
    TEACHER_SAMPLES,
    Feed,
    FeedContext,
    OnPolicyConfigError,
    as_rows,
    host_rng,
    stream_key,
)
from jdistill.rollout.paired_samples import ROLLOUT_REPLACED, ROLLOUT_WEIGHT, PairedSamplesFeed
from jdistill.rollout.replay_buffer import ReplayBuffer
from jdistill.rollout.step_samples import StepSamplesFeed, StudentProbability

__all__ = [
    "COIN", "DATASET", "EPOCH_RESPONSES", "REPLAY", "REPLAY_PICK", "SOURCE_NAMES", "STUDENT_KEY", "STUDENT_SAMPLES",
    "TEACHER_KEY", "TEACHER_SAMPLES", "Feed", "FeedContext", "OnPolicyConfigError", "PairedSamplesFeed", "ROLLOUT_REPLACED",
    "ROLLOUT_WEIGHT", "ReplayBuffer",
    "StepSamplesFeed", "StudentProbability", "as_rows", "host_rng", "stream_key",
]
