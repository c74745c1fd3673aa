"""Orbax checkpoints of the training state (a frozen teacher is never saved).

A checkpoint holds the :class:`~jdistill.engine.train_step.TrainState`
(student and method parameters, optimizer state, step, RNG, skip counters;
the teacher too when it changes during training: online distillation's trained
teacher, self-distillation's EMA) and, as JSON, the data position and the run
metadata. Restoring places every
array directly in the sharding of the current run's state.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from jdistill.data.batching import DataPosition


class Checkpointer:
    """Saves and restores ``(state, data position)`` in ``directory`` (a local path or e.g. ``gs://...``)."""

    def __init__(self, directory: str, *, keep: int = 2):
        self.directory = directory if "://" in directory else os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max(int(keep), 1), create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, position: DataPosition, metadata: dict) -> None:
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave({"position": position.to_dict(), **metadata}),
            ),
            force=True,
        )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, DataPosition, dict]:
        """Restores into the shapes, dtypes and shardings of ``abstract_state``."""
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), abstract_state
        )
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()),
        )
        data = dict(restored["data"])
        position = DataPosition.from_dict(data.pop("position"))
        return restored["state"], position, data

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()
