"""Orbax checkpoints of the training state (a frozen teacher is never saved), verified on restore.

A checkpoint holds the :class:`~jdistill.engine.train_step.TrainState`
(student and method parameters, optimizer state, step, RNG, skip counters;
the teacher too when it changes during training: online distillation's trained
teacher, self-distillation's EMA; never the frozen base weights of a LoRA run,
``state.frozen``, which the run reloads from its checkpoints' paths) and, as JSON, the data position, the run
metadata and an integrity record (:mod:`jdistill.engine.checkpoint_integrity`:
each array's shape, dtype and checksums). Restoring places every array
directly in the sharding of the current run's state.

What can go wrong, and what happens:

* a checkpoint that cannot be read (truncated or damaged files, damaged
  metadata) or whose arrays do not match their checksums (flipped bytes) is
  *damaged*: :meth:`Checkpointer.restore_latest` says which and why, moves it
  to ``<checkpoint dir>_damaged/`` and falls back to the newest intact one;
* a checkpoint written for other shapes (another student or method) stops the
  run with :class:`CheckpointMismatchError` before any array is read;
* saves are asynchronous: :meth:`Checkpointer.poll` (every step) reports a
  failed save as soon as it ends, :meth:`Checkpointer.save` refuses to start
  one the disk has no room for, and a failed save is abandoned (its temporary
  directory removed; the previous checkpoint stays the latest) with a
  :class:`CheckpointWriteError` naming the cause (``No space left on device``);
* on an error exit, :meth:`Checkpointer.finish_or_abandon` completes the
  in-flight save (or abandons it cleanly).
"""

from __future__ import annotations

import dataclasses
import errno
import glob
import os
import shutil
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

from jdistill import console
from jdistill.data.batching import DataPosition
from jdistill.engine import checkpoint_integrity as integrity_lib
from jdistill.engine.checkpoint_integrity import CheckpointMismatchError

__all__ = ["Checkpointer", "CheckpointMismatchError", "CheckpointWriteError", "NoIntactCheckpointError"]

# Room asked for on top of the estimated size of a new checkpoint.
_SPACE_MARGIN = 1.1


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (no space left, an I/O error); it was abandoned."""


class NoIntactCheckpointError(RuntimeError):
    """Every checkpoint in the directory is damaged."""


def _brief(error: BaseException, limit: int = 160) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_disk_full(error: BaseException) -> bool:
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        text = str(error)
        if "No space left on device" in text or "os_error_code='28'" in text:
            return True
        error = error.__cause__ or error.__context__
    return False


def without_frozen(state: Any) -> Any:
    """``state`` without its frozen LoRA base weights (``state.frozen``), which are never saved."""
    if getattr(state, "frozen", None) is None:
        return state
    return dataclasses.replace(state, frozen=None)


def _directory_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


class Checkpointer:
    """Saves and restores ``(state, data position)`` in ``directory`` (a local path or e.g. ``gs://...``)."""

    def __init__(self, directory: str, *, keep: int = 2):
        self.remote = "://" in directory
        self.directory = directory if self.remote else os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max(int(keep), 1), create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._pending: int | None = None  # the step of the save in flight
        self._closed = False

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    # ------------------------------------------------------------------ saving

    def save(self, step: int, state: Any, position: DataPosition, metadata: dict) -> None:
        """Starts an asynchronous save of step ``step`` (after checking the previous one and the free space)."""
        self.poll(block=True)
        state = without_frozen(state)
        self._check_space(step, state)
        data = {"position": position.to_dict(), **metadata, "integrity": integrity_lib.record(state)}
        try:
            self._manager.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data)),
                force=True,
            )
        except Exception as error:  # noqa: BLE001 - reported as a CheckpointWriteError
            self._abandon(step)
            raise CheckpointWriteError(self._write_failure(step, error)) from error
        self._pending = step

    def poll(self, *, block: bool = False) -> None:
        """Raises :class:`CheckpointWriteError` if the save in flight failed; ``block``: wait for it first."""
        if self._pending is None or (not block and self._manager.is_saving_in_progress()):
            return
        step, self._pending = self._pending, None
        try:
            self._manager.wait_until_finished()
        except Exception as error:  # noqa: BLE001
            self._abandon(step)
            raise CheckpointWriteError(self._write_failure(step, error)) from error

    def wait(self) -> None:
        self.poll(block=True)
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._closed = True
        self._manager.close()

    def finish_or_abandon(self) -> None:
        """On an error exit: completes the save in flight, or abandons it with a message; then closes."""
        if self._closed:
            return
        self._closed = True
        try:
            self.wait()
        except Exception as error:  # noqa: BLE001 - the run is already failing; say so and go on
            console.warn(str(error))
        try:
            self._manager.close()
        except Exception:  # noqa: BLE001
            pass

    def _check_space(self, step: int, state: Any) -> None:
        if self.remote:
            return  # every process checks the same (shared) directory, so all stop together
        latest = self.latest_step()
        previous = os.path.join(self.directory, str(latest)) if latest is not None else None
        if previous and os.path.isdir(previous):
            needed = _directory_bytes(previous)
        else:
            needed = sum(leaf.nbytes for leaf in jax.tree.leaves(state))
        free = shutil.disk_usage(self.directory).free
        if free < needed * _SPACE_MARGIN:
            raise CheckpointWriteError(
                f"No space for checkpoint step {step} in {self.directory}: it needs about "
                f"{needed / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free. Free some space, lower "
                "train.keep_checkpoints, or set train.checkpoint_dir to a larger disk; rerunning the same command "
                + (f"resumes from step {latest}." if latest is not None else "starts again.")
            )

    def _write_failure(self, step: int, error: BaseException) -> str:
        latest = self.latest_step()
        kept = f"the latest checkpoint is still step {latest}" if latest is not None else "there is no earlier one"
        if is_disk_full(error):
            return (
                f"No space left on device while writing checkpoint step {step} to {self.directory}; it was "
                f"abandoned and {kept}. Free some space, lower train.keep_checkpoints, or set "
                "train.checkpoint_dir to a larger disk, then rerun the same command to resume."
            )
        return (f"Writing checkpoint step {step} to {self.directory} failed ({_brief(error)}); it was abandoned and "
                f"{kept}.")

    def _abandon(self, step: int) -> None:
        """Removes what a failed save of ``step`` left, so the latest intact checkpoint stays the latest."""
        if not self.remote and jax.process_index() == 0:
            for path in glob.glob(os.path.join(self.directory, f"{step}.orbax-checkpoint-tmp*")):
                shutil.rmtree(path, ignore_errors=True)
            final = os.path.join(self.directory, str(step))
            if os.path.isdir(final) and not os.path.exists(os.path.join(final, "commit_success.txt")):
                shutil.rmtree(final, ignore_errors=True)
        try:
            self._manager.reload()
        except Exception:  # noqa: BLE001
            pass

    # ------------------------------------------------------------------ restoring

    def _read_data(self, step: int) -> dict:
        restored = self._manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
        data = restored["data"]
        if not isinstance(data, dict) or "position" not in data:
            raise ValueError("its metadata has no data position")
        return dict(data)

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, DataPosition, dict]:
        """Restores step ``step`` into the shapes, dtypes and shardings of ``abstract_state``, verified.

        A LoRA state's ``frozen`` base is not in the checkpoint: the one of
        ``abstract_state`` (the run's, as loaded) is kept.

        Raises :class:`CheckpointMismatchError` for a checkpoint of other shapes and
        ``ValueError`` (naming the arrays) when checksums do not match.
        """
        frozen = getattr(abstract_state, "frozen", None)
        abstract_state = without_frozen(abstract_state)
        data = self._read_data(step)
        record = data.pop("integrity", None)
        where = os.path.join(self.directory, str(step))
        if record is not None:
            problems = integrity_lib.layout_differences(record, abstract_state)
            if problems:
                raise CheckpointMismatchError(self._mismatch_message(where, problems))
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), abstract_state
        )
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
        except Exception as error:
            if record is None:  # an older jdistill's checkpoint: cannot tell damage from another layout; keep it
                raise CheckpointMismatchError(
                    f"The checkpoint {where} has no checksums (an older jdistill wrote it) and cannot be restored "
                    f"into this run ({_brief(error)}). Use a new --workdir, or move that directory away to start "
                    "afresh."
                ) from error
            raise
        state = restored["state"]
        if record is not None:
            bad = integrity_lib.checksum_differences(record, state)
            if bad:
                more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
                raise ValueError(f"its arrays do not match their checksums: {', '.join(bad[:3])}{more}")
        else:
            console.warn(f"checkpoint {where} has no checksums (written by an older jdistill); restored unverified.")
        position = DataPosition.from_dict(data.pop("position"))
        if frozen is not None:
            state = dataclasses.replace(state, frozen=frozen)  # the run's own frozen base, as loaded
        return state, position, data

    @staticmethod
    def _mismatch_message(where: str, problems: list[str]) -> str:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        return (
            f"The checkpoint {where} was written by a run with other shapes ({shown}). A checkpoint only "
            "resumes the run that wrote it: use a new --workdir (or train.checkpoint_dir) for another student, "
            "method or dtype, or move that directory away to start afresh."
        )

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, DataPosition, dict] | None:
        """``(step, state, position, metadata)`` of the newest intact checkpoint, or ``None`` without any.

        Damaged checkpoints on the way are reported and moved aside (see the
        module docstring); a checkpoint of other shapes stops the run.
        """
        damaged: list[tuple[int, str]] = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                state, position, data = self.restore(step, abstract_state)
            except CheckpointMismatchError:
                raise
            except Exception as error:  # noqa: BLE001 - any failure to read means damaged
                damaged.append((step, _brief(error)))
                continue
            for bad_step, why in damaged:
                moved = self._quarantine(bad_step)
                console.warn(
                    f"checkpoint {os.path.join(self.directory, str(bad_step))} is damaged ({why}); {moved}; "
                    f"resuming from the newest intact checkpoint, step {step}."
                )
            return step, state, position, data
        if damaged:
            listed = "; ".join(f"step {s}: {why}" for s, why in damaged)
            raise NoIntactCheckpointError(
                f"No intact checkpoint in {self.directory} ({listed}). Move that directory away to train from "
                "the start."
            )
        return None

    def _quarantine(self, step: int) -> str:
        source = os.path.join(self.directory, str(step))
        if jax.process_index() != 0:
            return "left for process 0 to move"
        if self.remote:
            self._manager.delete(step)
            return "deleted"
        target_dir = self.directory.rstrip(os.sep) + "_damaged"
        os.makedirs(target_dir, exist_ok=True)
        target = os.path.join(target_dir, str(step))
        if os.path.exists(target):
            target = f"{target}-{int(time.time())}"
        shutil.move(source, target)
        self._manager.reload()
        return f"moved to {target}"
