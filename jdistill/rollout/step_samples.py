"""Per-step on-policy data: fresh student samples, teacher samples, a replay buffer or the dataset.

:class:`StepSamplesFeed` runs the mechanics every per-step method shares: a
coin flip from a host RNG keyed by ``(seed, step)`` (so a resumed run makes the
same choices), generation with the jitted sampler (the step's prompts, one
prompt width for the whole run so each model compiles one program, each
checkpoint's stop tokens), an optional replay buffer (checkpointed), counters
and metrics. *Which* data a step uses is the method's policy:

* :class:`StudentProbability` (GKD, ImitKD): student samples with probability
  ``start + (end - start) · progress``, else the dataset batch (or teacher
  samples of the same prompts, GKD's ``seq_kd``);
* DistiLLM's adaptive off-policy rule lives with its method
  (:class:`jdistill.methods.distillm.AdaptiveReplay`).

A policy has ``sources`` (the counters it reports), ``replay_capacity`` (0 =
no buffer), ``evaluate_at_start``, ``choose(step, r, replay_full) -> source``,
``after_eval(step, metrics, writer)``, ``step_metrics()`` and a JSON
``state_dict()`` / ``load_state_dict()``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jdistill.data.batching import DataPosition
from jdistill.data.tokenize import TokenizedSide
from jdistill.rollout.feed import (
    COIN,
    DATASET,
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
from jdistill.rollout.replay_buffer import ReplayBuffer
from jdistill.sampling import SamplingSettings, StopTokens, generate_responses


@dataclasses.dataclass
class StudentProbability:
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
    total_steps: int = 1
    replay_capacity = 0
    evaluate_at_start = False

    def probability(self, progress: float) -> float:
        progress = min(max(float(progress), 0.0), 1.0)
        return self.probability_start + (self.probability_end - self.probability_start) * progress

    @property
    def sources(self) -> tuple[str, ...]:
        return ("teacher_samples" if self.teacher_samples else "dataset"), "student_samples"

    def choose(self, step: int, r: float, replay_full: bool) -> int:
        del replay_full
        if r < self.probability(step / max(self.total_steps, 1)):
            return STUDENT_SAMPLES
        return TEACHER_SAMPLES if self.teacher_samples else DATASET

    def after_eval(self, step, metrics, writer) -> None:
        del step, metrics, writer

    def step_metrics(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        del state


class StepSamplesFeed(Feed):
    """A policy's per-step choice between generated and dataset data (see the module docstring)."""

    def __init__(self, policy, ctx: FeedContext, sampling: SamplingSettings, *, method_name: str):
        self.policy, self.ctx, self.sampling = policy, ctx, sampling
        ctx.check_generation(method_name, needs_teacher="teacher_samples" in policy.sources)
        restored = ctx.restored or {}
        self.counts = {name: int(restored.get("counts", {}).get(name, 0)) for name in policy.sources}
        self.replay = None
        if policy.replay_capacity:
            if policy.replay_capacity < ctx.source.batch_size:
                raise OnPolicyConfigError(
                    f"method.replay_capacity ({policy.replay_capacity}) must hold at least one batch "
                    f"(train.batch_size={ctx.source.batch_size})."
                )
            self.replay = ReplayBuffer(policy.replay_capacity)
            if "replay" in restored:
                self.replay.load_state_dict(restored["replay"])
        policy.load_state_dict(restored)
        self.evaluate_at_start = policy.evaluate_at_start

    def _samples(self, model, stop: StopTokens, step: int, tag: int, position: DataPosition) -> list[TokenizedSide]:
        prompts = self.ctx.prompts(position)
        responses = generate_responses(model, prompts, self.sampling, stop, key=stream_key(self.ctx.seed, tag, step),
                                       batch_size=len(prompts), mesh=self.ctx.mesh, width=self.ctx.prompt_width)
        return as_rows(prompts, [r.ids for r in responses], self.ctx.max_len)

    def batch(self, step, position, host_batch, state):
        r = float(host_rng(self.ctx.seed, step, COIN).random())
        source = self.policy.choose(step, r, self.replay is not None and self.replay.full)
        if source == STUDENT_SAMPLES:
            rows = self._samples(self.ctx.student(state), self.ctx.student_stop, step, STUDENT_KEY, position)
            if self.replay is not None:
                self.replay.push(rows)
            host_batch = self.ctx.collate_rows(rows)
        elif source == TEACHER_SAMPLES:
            host_batch = self.ctx.collate_rows(
                self._samples(self.ctx.teacher, self.ctx.teacher_stop, step, TEACHER_KEY, position))
        elif source == REPLAY:
            rows = self.replay.sample(self.ctx.source.batch_size, host_rng(self.ctx.seed, step, REPLAY_PICK))
            host_batch = self.ctx.collate_rows(rows)
        self.counts[SOURCE_NAMES[source]] += 1
        metrics = {"data_source": float(source), **{f"steps_on_{k}": float(v) for k, v in self.counts.items()}}
        metrics.update(self.policy.step_metrics())
        if self.replay is not None:
            metrics["replay_size"] = float(len(self.replay))
        return host_batch, metrics

    def after_eval(self, step, metrics):
        self.policy.after_eval(step, metrics, self.ctx.writer)

    def state_dict(self) -> dict:
        state: dict[str, Any] = {"counts": dict(self.counts), **self.policy.state_dict()}
        if self.replay is not None:
            state["replay"] = self.replay.state_dict()
        return state
