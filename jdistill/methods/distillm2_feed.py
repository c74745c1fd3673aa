"""DistiLLM-2's batched on-policy data: teacher and student answer every training prompt at each epoch start.

At the start of every epoch the teacher and the current student answer every
training prompt (with a progress bar; each epoch's generation share of wall
time is logged as ``on_policy/generation_share``). A step of ``B`` prompts
trains on ``2B`` rows: the prompts with their teacher responses, then with
their student responses, with the per-row arrays below (the rows' half, each
half's global counts, the curriculum's reference gap). The reference gaps of
the α curriculum are averaged from the loss's metrics (:data:`GAP_METRICS`)
over the first epoch and kept in the feed's checkpointed state. An epoch's
responses are also written to ``workdir/on_policy/epoch_<e>.npz``, so a run
resumed mid-epoch trains on the very responses it was interrupted on
(single-process runs; a multi-process run regenerates them with the resumed
student).
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from jdistill import console
from jdistill.data.tokenize import TokenizedSide
from jdistill.rollout import (
    EPOCH_RESPONSES,
    STUDENT_KEY,
    TEACHER_KEY,
    Feed,
    FeedContext,
    OnPolicyConfigError,
    as_rows,
    stream_key,
)
from jdistill.sampling import SamplingSettings, generate_responses

# Per-row ``[B]`` float32 arrays of an epoch-responses batch.
STUDENT_ROW = "on_policy_student_row"  # 1 on a student-response row, 0 on a teacher-response row.
HALF_SEQUENCES = "on_policy_half_sequences"  # Global number of rows with response tokens in the row's half.
HALF_TOKENS = "on_policy_half_tokens"  # Global number of response tokens in the row's half.
CURRICULUM_ON = "on_policy_curriculum_on"  # 1 once the reference gap of the row's half is known.
REFERENCE_GAP = "on_policy_reference_gap"  # The reference gap m of the row's half (0 until known).
EPOCH_RESPONSE_KEYS = (STUDENT_ROW, HALF_SEQUENCES, HALF_TOKENS, CURRICULUM_ON, REFERENCE_GAP)

# Step metrics the loss reports (per-half means) from which the feed measures the curriculum's
# reference gaps during the first epoch: teacher-response rows, student-response rows.
GAP_METRICS = ("gap_teacher_responses", "gap_student_responses")


class EpochResponsesFeed(Feed):
    """DistiLLM-2's batched on-policy data (see the module docstring)."""

    def __init__(self, ctx: FeedContext, sampling: SamplingSettings, *, generation_batch_size: int,
                 measure_reference_gap: bool):
        ctx.check_generation("distillm2", needs_teacher=True)
        if generation_batch_size < 1 or generation_batch_size % ctx.batch_shards:
            raise OnPolicyConfigError(
                f"method.generation_batch_size ({generation_batch_size}) must be a positive multiple of the "
                f"{ctx.batch_shards} batch shards of the mesh."
            )
        self.ctx, self.sampling = ctx, sampling
        self.measure_reference_gap = measure_reference_gap
        self.batch_size = int(generation_batch_size)
        self.prompts = [e.student.ids[: e.student.prompt_len] for e in ctx.source.examples]
        self.resume_epoch = None if ctx.resume_position is None else ctx.resume_position.epoch
        restored = ctx.restored or {}
        self.epoch: int | None = None
        self.teacher_rows: list[TokenizedSide] = []
        self.student_rows: list[TokenizedSide] = []
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
        max_len = self.ctx.max_len
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
            teacher = generate_responses(ctx.teacher, self.prompts, self.sampling, ctx.teacher_stop,
                                         key=stream_key(ctx.seed, TEACHER_KEY, epoch), **common)
            student = generate_responses(ctx.student(state), self.prompts, self.sampling, ctx.student_stop,
                                         key=stream_key(ctx.seed, STUDENT_KEY, epoch), **common)
        finally:
            if progress is not None:
                progress.close()
        teacher, student = [r.ids for r in teacher], [r.ids for r in student]
        self._save_epoch(epoch, teacher, student)
        self.teacher_rows = as_rows(self.prompts, teacher, ctx.max_len)
        self.student_rows = as_rows(self.prompts, student, ctx.max_len)

    def _start_epoch(self, epoch: int, state) -> None:
        now = time.perf_counter()
        self._log_epoch_share(complete=True)
        self.epoch, self.epoch_start = epoch, now
        if not self._load_epoch(epoch):
            self._generate_epoch(epoch, state)
        self.generation_seconds = time.perf_counter() - now
        if self.measure_reference_gap and epoch >= 1 and self.reference_gap is None:
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
        curriculum = float(batch[CURRICULUM_ON][0])
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
        if self.measure_reference_gap and epoch >= 1 and self.reference_gap is not None:
            for h in range(2):
                part = slice(h * half, (h + 1) * half)
                reference[part] = self.reference_gap[h]
                on[part] = float(self.reference_gap[h] > 0)
        return {STUDENT_ROW: student_row, HALF_SEQUENCES: sequences, HALF_TOKENS: tokens,
                CURRICULUM_ON: on, REFERENCE_GAP: reference}

    def after_step(self, position, step, values):
        self.last_step = step
        if self.measure_reference_gap and position.epoch == 0:
            self.gap_sums = [s + float(values[k]) for s, k in zip(self.gap_sums, GAP_METRICS)]
            self.gap_steps += 1

    def state_dict(self) -> dict:
        return {"reference_gap_sums": self.gap_sums, "reference_gap_steps": self.gap_steps,
                "reference_gap": self.reference_gap}

    def finish(self, step):
        self.last_step = step
        epoch_done = self.epoch is not None and self.last_step % max(self.ctx.source.steps_per_epoch, 1) == 0
        self._log_epoch_share(complete=epoch_done)
        self.epoch_start = None
