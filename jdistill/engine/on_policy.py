"""On-policy data for the training loop: generated responses as ordinary batch arrays.

A method declares the data it trains on with a spec of
:mod:`jdistill.methods.data_policy`; :func:`make_feed` turns it into a *feed*
the trainer calls at four points and nowhere else:

* ``batch(step, position, host_batch, state)`` before each step: returns the
  host batch to train on (the dataset batch, or rows built from generated
  responses) and per-step metrics (``data_source`` and counters);
* ``after_step(position, step, values)`` with the step's metrics;
* ``after_eval(step, metrics)`` after each periodic evaluation;
* ``state_dict()`` / the ``restored`` argument of :func:`make_feed`: the feed's
  state in the checkpoint's JSON metadata (key ``on_policy``), so a resumed run
  continues exactly; ``finish(step)`` at the end of the run.

Generation uses the jitted sampler (:func:`jdistill.sampling.generate`) with
the current student parameters, sharded over the training mesh; prompts are
left-padded to one power-of-two width (the longest training prompt's) in
batches of a fixed size, so each model compiles one program and reuses it for
every call.

Feeds:

* :class:`EpochResponsesFeed` (DistiLLM-2): at each epoch start the teacher
  and the current student answer every training prompt (with a progress bar;
  each epoch's generation share of wall time is logged as
  ``on_policy/generation_share``). A step of ``B`` prompts trains on ``2B``
  rows (teacher responses, then student responses) with the per-row arrays of
  :data:`jdistill.methods.data_policy.EPOCH_RESPONSE_KEYS`. The reference gaps
  of the α curriculum are averaged from the loss's metrics over the first
  epoch and kept in the checkpoint metadata. An epoch's responses are also
  written to ``workdir/on_policy/epoch_<e>.npz``, so a run resumed mid-epoch
  trains on the very responses it was interrupted on (single-process runs; a
  multi-process run regenerates them with the resumed student).
* :class:`StepSamplesFeed` (GKD, ImitKD, DistiLLM): per step, a host RNG keyed
  by ``(seed, step)`` decides between fresh student samples of the step's
  prompts, teacher samples, a replay batch (DistiLLM's buffer, checkpointed)
  and the dataset batch.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from jdistill import sampling
from jdistill.data.batching import DataPosition, collate
from jdistill.data.tokenize import TokenizedExample, TokenizedSide
from jdistill import console
from jdistill.engine.evaluation import to_host
from jdistill.engine.replay_buffer import ReplayBuffer
from jdistill.engine.run_setup import num_batch_shards
from jdistill.methods import data_policy as dp
from jdistill.methods import distillm
from jdistill.methods.base import Method

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
_COIN, _REPLAY_PICK, _STUDENT_KEY, _TEACHER_KEY = 11, 12, 13, 14


class OnPolicyConfigError(ValueError):
    """An on-policy setting that cannot work, with the setting to change."""


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How responses are sampled (``config.on_policy``) and the tokenizer's ids."""

    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    max_len: int
    eos_id: int | None
    pad_id: int

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, tokenizer) -> "Sampling":
        op = config.on_policy
        max_new = int(op.max_new_tokens) or int(config.data.max_len) - int(config.data.max_prompt_len)
        if max_new < 1:
            raise OnPolicyConfigError(
                f"on_policy.max_new_tokens resolves to {max_new}; set it >= 1, or make data.max_len larger "
                "than data.max_prompt_len."
            )
        eos = getattr(tokenizer, "eos_token_id", None)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or 0)
        return cls(float(op.temperature), float(op.top_p), int(op.top_k), max_new, int(config.data.max_len),
                   None if eos is None else int(eos), int(pad))


@dataclasses.dataclass
class FeedContext:
    """What every feed reads: the run's config, data, models and outputs."""

    config: ml_collections.ConfigDict
    source: Any  # jdistill.data.BatchSource of the training examples
    collate_kwargs: dict
    student_graphdef: Any
    teacher: Any  # the loaded teacher Decoder, or None
    sampling: Sampling
    mesh: Any
    writer: Any  # MetricsWriter
    workdir: str
    total_steps: int

    @property
    def seed(self) -> int:
        return int(self.config.train.seed)

    @functools.cached_property
    def prompt_width(self) -> int:
        """The one (power-of-two) prompt width every generation call pads to: the longest training prompt's."""
        return sampling.pow2_bucket(max(e.student.prompt_len for e in self.source.examples))

    @property
    def show_progress(self) -> bool:
        return bool(self.config.logging.progress_bar) and jax.process_index() == 0

    def student(self, state):
        """The current student (the train state's parameters, no copy)."""
        return nnx.merge(self.student_graphdef, state.trainable["student"])

    def prompts(self, position: DataPosition) -> list[np.ndarray]:
        """Prompt ids of the examples of the batch at ``position``."""
        return [self.source.examples[i].student.ids[: self.source.examples[i].student.prompt_len]
                for i in self.batch_rows(position)]

    def batch_rows(self, position: DataPosition) -> np.ndarray:
        start = position.step_in_epoch * self.source.batch_size
        return self.source.order(position.epoch)[start : start + self.source.batch_size]

    def collate_rows(self, rows: list[TokenizedSide]) -> dict[str, np.ndarray]:
        return collate([TokenizedExample(id=str(i), student=row) for i, row in enumerate(rows)], **self.collate_kwargs)


def generate_responses(model, prompts, sampling_: Sampling, *, key, batch_size: int, mesh, width: int,
                       progress=None):
    """One response per prompt (token ids, EOS included when the row ended), in prompt order.

    Prompts are grouped by length (the rows of a batch end close together) into
    fixed-size batches left-padded to one ``width``, so every call of a model
    runs the same compiled program; the last batch is filled with copies.
    """
    responses: list[np.ndarray | None] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    eos = () if sampling_.eos_id is None else (sampling_.eos_id,)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = sampling.left_pad([prompts[i] for i in chunk], width, sampling_.pad_id)
        ids, mask = sampling.fill_batch(ids, mask, batch_size)
        out = sampling.generate(
            model, ids, mask, key=jax.random.fold_in(key, start), max_new_tokens=sampling_.max_new_tokens,
            temperature=sampling_.temperature, top_k=sampling_.top_k, top_p=sampling_.top_p, eos_ids=eos,
            pad_id=sampling_.pad_id, prompt_buckets=None, mesh=mesh,
        )
        tokens, lengths = to_host(out.tokens), to_host(out.lengths)
        for row, index in enumerate(chunk):
            responses[index] = tokens[row, : lengths[row]].astype(np.int32)
        if progress is not None:
            progress.update(len(chunk))
    return responses


def as_rows(prompts, responses, max_len: int) -> list[TokenizedSide]:
    """Prompt + response rows, responses cut to fit ``max_len`` (an empty response keeps no row tokens)."""
    rows = []
    for prompt, response in zip(prompts, responses):
        room = max(max_len - len(prompt), 0)
        rows.append(TokenizedSide(np.concatenate([prompt, response[:room]]).astype(np.int32), len(prompt)))
    return rows


def _key(seed: int, tag: int, *indices: int):
    key = jax.random.fold_in(jax.random.key(seed), tag)
    for index in indices:
        key = jax.random.fold_in(key, index)
    return key


def _host_rng(seed: int, step: int, tag: int) -> np.random.Generator:
    return np.random.default_rng([seed, step, tag])


class DatasetFeed:
    """Methods without a data policy: the dataset batches, unchanged."""

    # Whether the trainer evaluates once before the first step of a fresh run
    # and hands the result to after_eval (DistiLLM's reference validation loss).
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


class EpochResponsesFeed(DatasetFeed):
    """DistiLLM-2's batched on-policy data (see the module docstring)."""

    def __init__(self, spec: dp.EpochResponses, ctx: FeedContext, restored: dict | None, resume_epoch: int | None):
        if ctx.teacher is None:
            raise OnPolicyConfigError("Epoch responses need a teacher model (teacher.path).")
        self.spec, self.ctx = spec, ctx
        self.batch_size = int(ctx.config.on_policy.batch_size)
        self.prompts = [e.student.ids[: e.student.prompt_len] for e in ctx.source.examples]
        self.resume_epoch = resume_epoch
        self.epoch: int | None = None
        self.teacher_rows: list[TokenizedSide] = []
        self.student_rows: list[TokenizedSide] = []
        restored = restored or {}
        self.gap_sums = [float(x) for x in restored.get("reference_gap_sums", [0.0, 0.0])]
        self.gap_steps = int(restored.get("reference_gap_steps", 0))
        reference = restored.get("reference_gap")
        self.reference_gap = None if reference is None else [float(x) for x in reference]
        self.epoch_start: float | None = None
        self.generation_seconds = 0.0
        self.last_step = 0

    # -- epoch data

    def _epoch_path(self, epoch: int) -> str:
        return os.path.join(self.ctx.workdir, "on_policy", f"epoch_{epoch}.npz")

    def _load_epoch(self, epoch: int) -> bool:
        path = self._epoch_path(epoch)
        if epoch != self.resume_epoch or jax.process_count() > 1 or not os.path.exists(path):
            return False
        with np.load(path, allow_pickle=False) as f:
            if int(f["num_prompts"]) != len(self.prompts) or int(f["seed"]) != self.ctx.seed:
                return False
            teacher = np.split(f["teacher_ids"], f["teacher_offsets"][1:-1])
            student = np.split(f["student_ids"], f["student_offsets"][1:-1])
        max_len = self.ctx.sampling.max_len
        self.teacher_rows = as_rows(self.prompts, teacher, max_len)
        self.student_rows = as_rows(self.prompts, student, max_len)
        console.info(f"epoch {epoch}: resumed with the stored teacher and student responses of {path}")
        return True

    def _save_epoch(self, epoch: int, teacher, student) -> None:
        if jax.process_index() != 0:
            return
        path = self._epoch_path(epoch)
        os.makedirs(os.path.dirname(path), exist_ok=True)

        def packed(responses):
            offsets = np.concatenate([[0], np.cumsum([len(r) for r in responses])]).astype(np.int64)
            return np.concatenate(responses).astype(np.int32), offsets

        teacher_ids, teacher_offsets = packed(teacher)
        student_ids, student_offsets = packed(student)
        tmp = path + ".tmp.npz"
        np.savez(tmp, teacher_ids=teacher_ids, teacher_offsets=teacher_offsets, student_ids=student_ids,
                 student_offsets=student_offsets, num_prompts=len(self.prompts), seed=self.ctx.seed)
        os.replace(tmp, path)

    def _generate_epoch(self, epoch: int, state) -> None:
        ctx = self.ctx
        progress = None
        if ctx.show_progress:
            from tqdm import tqdm

            progress = tqdm(total=2 * len(self.prompts), desc=f"epoch {epoch}: teacher + student responses",
                            unit="resp", leave=False, dynamic_ncols=True)
        try:
            common = dict(batch_size=self.batch_size, mesh=ctx.mesh, width=ctx.prompt_width, progress=progress)
            teacher = generate_responses(ctx.teacher, self.prompts, ctx.sampling,
                                         key=_key(ctx.seed, _TEACHER_KEY, epoch), **common)
            student = generate_responses(ctx.student(state), self.prompts, ctx.sampling,
                                         key=_key(ctx.seed, _STUDENT_KEY, epoch), **common)
        finally:
            if progress is not None:
                progress.close()
        self._save_epoch(epoch, teacher, student)
        self.teacher_rows = as_rows(self.prompts, teacher, ctx.sampling.max_len)
        self.student_rows = as_rows(self.prompts, student, ctx.sampling.max_len)

    def _start_epoch(self, epoch: int, state) -> None:
        now = time.perf_counter()
        self._log_epoch_share(complete=True)
        self.epoch, self.epoch_start = epoch, now
        if not self._load_epoch(epoch):
            self._generate_epoch(epoch, state)
        self.generation_seconds = time.perf_counter() - now
        if self.spec.measure_reference_gap and epoch >= 1 and self.reference_gap is None:
            self._fix_reference_gap()

    def _fix_reference_gap(self) -> None:
        if self.gap_steps == 0:
            console.info("DistiLLM-2: no first-epoch gap was measured (resumed past it without one); "
                         "the α curriculum stays off.")
            self.reference_gap = [0.0, 0.0]
            return
        self.reference_gap = [s / self.gap_steps for s in self.gap_sums]
        console.info(
            f"DistiLLM-2: reference gaps from the first epoch: teacher responses {self.reference_gap[0]:.4f}, "
            f"student responses {self.reference_gap[1]:.4f}; α curriculum on"
            + ("" if min(self.reference_gap) > 0 else " (a half with a gap <= 0 keeps α0)")
        )

    def _log_epoch_share(self, *, complete: bool) -> None:
        if self.epoch is None or self.epoch_start is None:
            return
        total = time.perf_counter() - self.epoch_start
        share = self.generation_seconds / max(total, 1e-9)
        self.ctx.writer.write(self.last_step, {
            "epoch": self.epoch, "generation_seconds": self.generation_seconds, "epoch_seconds": total,
            "generation_share": share,
        }, split="on_policy")
        console.info(
            f"epoch {self.epoch}{'' if complete else ' (partial)'}: generation {self.generation_seconds:.1f} s of "
            f"{total:.1f} s ({100 * share:.0f}% of the epoch's wall time)"
        )

    # -- the feed interface

    def batch(self, step, position, host_batch, state):
        del step, host_batch
        if position.epoch != self.epoch:
            self._start_epoch(position.epoch, state)
        rows = self.ctx.batch_rows(position)
        batch = self.ctx.collate_rows([self.teacher_rows[i] for i in rows] + [self.student_rows[i] for i in rows])
        batch.update(self._row_arrays(batch["loss_mask"], len(rows), position.epoch))
        curriculum = float(batch[dp.CURRICULUM_ON][0])
        return batch, {"data_source": float(EPOCH_RESPONSES), "curriculum_on": curriculum}

    def _row_arrays(self, loss_mask: np.ndarray, half: int, epoch: int) -> dict[str, np.ndarray]:
        student_row = np.repeat(np.asarray([0.0, 1.0], np.float32), half)
        tokens_B = loss_mask.sum(axis=-1)
        sequences, tokens = np.zeros(2 * half, np.float32), np.zeros(2 * half, np.float32)
        for h in range(2):
            part = slice(h * half, (h + 1) * half)
            sequences[part] = np.sum(tokens_B[part] > 0)
            tokens[part] = np.sum(tokens_B[part])
        reference = np.zeros(2 * half, np.float32)
        on = np.zeros(2 * half, np.float32)
        if self.spec.measure_reference_gap and epoch >= 1 and self.reference_gap is not None:
            for h in range(2):
                part = slice(h * half, (h + 1) * half)
                reference[part] = self.reference_gap[h]
                on[part] = float(self.reference_gap[h] > 0)
        return {dp.STUDENT_ROW: student_row, dp.HALF_SEQUENCES: sequences, dp.HALF_TOKENS: tokens,
                dp.CURRICULUM_ON: on, dp.REFERENCE_GAP: reference}

    def after_step(self, position, step, values):
        self.last_step = step
        if self.spec.measure_reference_gap and position.epoch == 0:
            self.gap_sums = [s + float(values[k]) for s, k in zip(self.gap_sums, dp.GAP_METRICS)]
            self.gap_steps += 1

    def state_dict(self) -> dict:
        return {"reference_gap_sums": self.gap_sums, "reference_gap_steps": self.gap_steps,
                "reference_gap": self.reference_gap}

    def finish(self, step):
        self.last_step = step
        epoch_done = self.epoch is not None and self.last_step % max(self.ctx.source.steps_per_epoch, 1) == 0
        self._log_epoch_share(complete=epoch_done)
        self.epoch_start = None


class StepSamplesFeed(DatasetFeed):
    """GKD / ImitKD (:class:`StudentSamples`) and DistiLLM (:class:`AdaptiveReplay`), step by step."""

    def __init__(self, spec, ctx: FeedContext, restored: dict | None):
        self.spec, self.ctx = spec, ctx
        restored = restored or {}
        self.counts = {name: int(restored.get("counts", {}).get(name, 0)) for name in self._sources()}
        self.replay = None
        if isinstance(spec, dp.AdaptiveReplay):
            if spec.capacity < ctx.source.batch_size:
                raise OnPolicyConfigError(
                    f"method.replay_capacity ({spec.capacity}) must hold at least one batch "
                    f"(train.batch_size={ctx.source.batch_size})."
                )
            self.replay = ReplayBuffer(spec.capacity)
            if "replay" in restored:
                self.replay.load_state_dict(restored["replay"])
            reference = restored.get("reference_validation_loss", restored.get("previous_validation_loss"))
            self.phi_state = distillm.PhiState(float(restored.get("phi", spec.phi_init)),
                                               None if reference is None else float(reference))
            self.evaluate_at_start = True
        if ctx.teacher is None and self._wants_teacher_samples():
            raise OnPolicyConfigError("method.seq_kd needs a teacher model (teacher.path).")

    def _wants_teacher_samples(self) -> bool:
        return isinstance(self.spec, dp.StudentSamples) and self.spec.teacher_samples

    def _sources(self) -> tuple[str, ...]:
        if isinstance(self.spec, dp.AdaptiveReplay):
            return "dataset", "student_samples", "replay"
        return ("teacher_samples" if self._wants_teacher_samples() else "dataset"), "student_samples"

    def _choose(self, step: int) -> int:
        progress = step / max(self.ctx.total_steps, 1)
        r = float(_host_rng(self.ctx.seed, step, _COIN).random())
        if isinstance(self.spec, dp.AdaptiveReplay):
            phi = self.phi_state.phi
            # The release's global_step counts from 1 at the first step: φ_s = φ (1 - (step + 1) / T).
            phi_s = phi * (1.0 - (step + 1) / max(self.ctx.total_steps, 1))
            if r < phi_s or (r < phi and not self.replay.full):
                return STUDENT_SAMPLES
            return REPLAY if r < phi else DATASET
        if r < self.spec.probability(progress):
            return STUDENT_SAMPLES
        return TEACHER_SAMPLES if self.spec.teacher_samples else DATASET

    def _samples(self, model, step: int, tag: int, position: DataPosition) -> list[TokenizedSide]:
        prompts = self.ctx.prompts(position)
        responses = generate_responses(model, prompts, self.ctx.sampling, key=_key(self.ctx.seed, tag, step),
                                       batch_size=len(prompts), mesh=self.ctx.mesh, width=self.ctx.prompt_width)
        return as_rows(prompts, responses, self.ctx.sampling.max_len)

    def batch(self, step, position, host_batch, state):
        source = self._choose(step)
        if source == STUDENT_SAMPLES:
            rows = self._samples(self.ctx.student(state), step, _STUDENT_KEY, position)
            if self.replay is not None:
                self.replay.push(rows)
            host_batch = self.ctx.collate_rows(rows)
        elif source == TEACHER_SAMPLES:
            host_batch = self.ctx.collate_rows(self._samples(self.ctx.teacher, step, _TEACHER_KEY, position))
        elif source == REPLAY:
            rows = self.replay.sample(self.ctx.source.batch_size, _host_rng(self.ctx.seed, step, _REPLAY_PICK))
            host_batch = self.ctx.collate_rows(rows)
        self.counts[SOURCE_NAMES[source]] += 1
        metrics = {"data_source": float(source), **{f"steps_on_{k}": float(v) for k, v in self.counts.items()}}
        if self.replay is not None:
            metrics.update(phi=self.phi_state.phi, replay_size=float(len(self.replay)))
        return host_batch, metrics

    def after_eval(self, step, metrics):
        if self.replay is None:
            return
        before = self.phi_state
        self.phi_state = distillm.update_phi(before, metrics["student_ce"], trigger=self.spec.trigger,
                                             increment=self.spec.increment)
        if self.phi_state.phi != before.phi:
            console.info(f"DistiLLM: validation CE rose {before.reference_loss:.4f} -> "
                         f"{self.phi_state.reference_loss:.4f}; φ raised to {self.phi_state.phi:.2f}")
        self.ctx.writer.write(step, {"phi": self.phi_state.phi,
                                     "reference_validation_loss": self.phi_state.reference_loss}, split="on_policy")

    def state_dict(self) -> dict:
        state: dict[str, Any] = {"counts": dict(self.counts)}
        if self.replay is not None:
            state.update(phi=self.phi_state.phi, reference_validation_loss=self.phi_state.reference_loss,
                         replay=self.replay.state_dict())
        return state


def make_feed(
    method: Method,
    config: ml_collections.ConfigDict,
    *,
    data,
    loaded,
    mesh,
    writer,
    workdir: str,
    student_graphdef,
    total_steps: int,
    restored: dict | None = None,
    resume_position: DataPosition | None = None,
):
    """The feed of ``method.data_policy`` (a pass-through :class:`DatasetFeed` when it is ``None``).

    Args:
      restored: the ``on_policy`` entry of a restored checkpoint's metadata, if any.
      resume_position: the data position a restored checkpoint resumes at
        (``None`` for a fresh run).
    """
    spec = method.data_policy
    if spec is None:
        return DatasetFeed()
    if method.cross_vocabulary:
        raise OnPolicyConfigError(f"Method {method.name!r}: generated responses need one shared tokenizer.")
    shards = num_batch_shards(mesh)
    if config.train.batch_size % shards:
        raise OnPolicyConfigError(
            f"train.batch_size ({config.train.batch_size}) must split over the {shards} batch shards of the mesh "
            "to generate a step's samples."
        )
    ctx = FeedContext(
        config=config, source=data.train, collate_kwargs=data.collate_kwargs, student_graphdef=student_graphdef,
        teacher=loaded.teacher, sampling=Sampling.from_config(config, loaded.student_tokenizer), mesh=mesh,
        writer=writer, workdir=workdir, total_steps=total_steps,
    )
    if isinstance(spec, dp.EpochResponses):
        if int(config.on_policy.batch_size) < 1 or int(config.on_policy.batch_size) % shards:
            raise OnPolicyConfigError(
                f"on_policy.batch_size ({config.on_policy.batch_size}) must be a positive multiple of the "
                f"{shards} batch shards of the mesh."
            )
        return EpochResponsesFeed(spec, ctx, restored, None if resume_position is None else resume_position.epoch)
    if isinstance(spec, (dp.StudentSamples, dp.AdaptiveReplay)):
        return StepSamplesFeed(spec, ctx, restored)
    raise TypeError(f"Method {method.name!r} has an unknown data_policy {spec!r}.")
