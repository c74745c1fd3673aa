"""The one small interface between the training loop and a method's on-policy data.

A *feed* decides what each step trains on. The trainer calls it at five points
and nowhere else:

* ``batch(step, position, host_batch, state)`` before each step: the host batch
  to train on (the dataset batch, or rows built from generated responses) and
  per-step metrics (``data_source`` and counters);
* ``after_step(position, step, values)`` with the step's metrics;
* ``after_eval(step, metrics)`` after each evaluation (and, when
  ``evaluate_at_start``, once before the first step of a fresh run);
* ``state_dict()``: the feed's state, saved with every checkpoint (JSON) and
  handed back as ``FeedContext.restored`` on resume; ``finish(step)`` at the end.

:class:`Feed` itself is the dataset feed (every step trains on the dataset
batch, unchanged). A method that generates its training data returns its own
feed from ``Method.make_feed(context)``: the generic per-step sampler of
:mod:`jdistill.rollout.step_samples` with the method's policy (GKD, ImitKD,
DistiLLM), or a feed of its own (DistiLLM-2's epoch responses).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import numpy as np

from jdistill.data.batching import DataPosition, collate
from jdistill.data.tokenize import TokenizedExample, TokenizedSide
from jdistill.models.lora import merge as merge_model
from jdistill.models.sharding import batch_sharding
from jdistill.padding import pow2_bucket
from jdistill.sampling import SamplingSettings, StopTokens

# data_source metric values: which data a step trained on.
DATASET, STUDENT_SAMPLES, TEACHER_SAMPLES, REPLAY, EPOCH_RESPONSES = 0, 1, 2, 3, 4
SOURCE_NAMES = {
    DATASET: "dataset",
    STUDENT_SAMPLES: "student_samples",
    TEACHER_SAMPLES: "teacher_samples",
    REPLAY: "replay",
    EPOCH_RESPONSES: "epoch_responses",
}
# Stream tags that keep the RNG streams of different uses apart.
COIN, REPLAY_PICK, STUDENT_KEY, TEACHER_KEY = 11, 12, 13, 14


class OnPolicyConfigError(ValueError):
    """An on-policy setting that cannot work, with the setting to change."""


class Feed:
    """The dataset feed: every step trains on the dataset batch (the interface's defaults)."""

    # Whether the trainer evaluates once before the first step of a fresh run and hands the
    # result to after_eval (DistiLLM's reference validation loss).
    evaluate_at_start = False

    def batch(self, step, position, host_batch, state):
        del step, position, state
        return host_batch, {}

    def after_step(self, position, step, values):
        del position, step, values

    def after_eval(self, step, metrics):
        del step, metrics

    def state_dict(self) -> dict:
        return {}

    def finish(self, step):
        del step


@dataclasses.dataclass
class FeedContext:
    """What a feed may read of the run (built by the trainer; the run config itself is not passed).

    Attributes:
      source: the training examples (:class:`jdistill.data.BatchSource`).
      collate_kwargs: how rows are collated into the batch's padded arrays.
      student_graphdef: the student's graph (the current parameters are in ``state``).
      teacher: the loaded teacher model, or ``None``.
      student_stop, teacher_stop: each checkpoint's stop tokens (one EOS policy).
      mesh: the device mesh.
      writer: ``write(step, metrics, split=...)`` for the feed's own records.
      workdir: the run directory (for files a feed keeps, e.g. an epoch's responses).
      total_steps: the run's length in steps.
      seed: the run's seed.
      max_len, max_prompt_len: ``data.max_len`` / ``data.max_prompt_len``.
      show_progress: whether this process shows progress bars.
      restored: the feed's ``state_dict()`` from the checkpoint being resumed, or ``None``.
      resume_position: the data position a resumed run starts at (``None`` for a fresh run).
    """

    source: Any
    collate_kwargs: dict
    student_graphdef: Any
    teacher: Any
    student_stop: StopTokens
    teacher_stop: StopTokens | None
    mesh: Any
    writer: Any
    workdir: str
    total_steps: int
    seed: int
    max_len: int
    max_prompt_len: int
    show_progress: bool = False
    restored: dict | None = None
    resume_position: DataPosition | None = None

    @functools.cached_property
    def prompt_width(self) -> int:
        """The one (power-of-two) prompt width every generation call pads to: the longest training prompt's."""
        return pow2_bucket(max(e.student.prompt_len for e in self.source.examples))

    @property
    def batch_shards(self) -> int:
        if self.mesh is None:
            return 1
        spec = batch_sharding(self.mesh).spec[0]
        names = spec if isinstance(spec, tuple) else (spec,)
        return int(np.prod([self.mesh.shape[n] for n in names if n is not None]))

    def student(self, state):
        """The current student (the train state's parameters and, with LoRA, its frozen base; no copy)."""
        base = None if getattr(state, "frozen", None) is None else state.frozen.get("student")
        return merge_model(self.student_graphdef, state.trainable["student"], base)

    def prompts(self, position: DataPosition) -> list[np.ndarray]:
        """Prompt ids of the examples of the batch at ``position``."""
        return [self.source.examples[i].student.ids[: self.source.examples[i].student.prompt_len]
                for i in self.batch_rows(position)]

    def batch_rows(self, position: DataPosition) -> np.ndarray:
        start = position.step_in_epoch * self.source.batch_size
        return self.source.order(position.epoch)[start : start + self.source.batch_size]

    def collate_rows(self, rows: list[TokenizedSide]) -> dict[str, np.ndarray]:
        return collate([TokenizedExample(id=str(i), student=row) for i, row in enumerate(rows)], **self.collate_kwargs)

    def sampling_settings(self, *, temperature: float, top_p: float, top_k: int,
                          max_new_tokens: int, setting: str) -> SamplingSettings:
        """Sampler settings; ``max_new_tokens`` 0 means ``max_len - max_prompt_len`` (``setting`` names the field)."""
        max_new = int(max_new_tokens) or self.max_len - self.max_prompt_len
        if max_new < 1:
            raise OnPolicyConfigError(
                f"{setting} resolves to {max_new}; set it >= 1, or make data.max_len larger than data.max_prompt_len."
            )
        return SamplingSettings(max_new_tokens=max_new, temperature=float(temperature), top_p=float(top_p),
                                top_k=int(top_k))

    def check_generation(self, method_name: str, *, needs_teacher: bool = False) -> None:
        """The run can generate a step's samples: one tokenizer, a batch that splits over the mesh, a teacher."""
        if self.source.batch_size % self.batch_shards:
            raise OnPolicyConfigError(
                f"train.batch_size ({self.source.batch_size}) must split over the {self.batch_shards} batch shards "
                "of the mesh to generate a step's samples."
            )
        if needs_teacher and self.teacher is None:
            raise OnPolicyConfigError(f"Method {method_name!r}: generating teacher responses needs a teacher model "
                                      "(teacher.path).")


def as_rows(prompts, responses, max_len: int) -> list[TokenizedSide]:
    """Prompt + response rows, responses cut to fit ``max_len`` (an empty response keeps no row tokens).

    ``responses`` are token-id arrays (the stop token included when the response ended).
    """
    rows = []
    for prompt, response in zip(prompts, responses):
        room = max(max_len - len(prompt), 0)
        rows.append(TokenizedSide(np.concatenate([prompt, response[:room]]).astype(np.int32), len(prompt)))
    return rows


def stream_key(seed: int, tag: int, *indices: int):
    """A PRNG key of the stream ``tag`` (the ``*_KEY`` constants), folded with ``indices`` (step, epoch...)."""
    key = jax.random.fold_in(jax.random.key(seed), tag)
    for index in indices:
        key = jax.random.fold_in(key, index)
    return key


def host_rng(seed: int, step: int, tag: int) -> np.random.Generator:
    """The host RNG of ``(seed, step, tag)``: coin flips a resumed run repeats exactly."""
    return np.random.default_rng([seed, step, tag])
