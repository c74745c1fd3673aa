"""Metrics to ``workdir/metrics.jsonl`` and TensorBoard (process 0 only).

A run resumed from the checkpoint of step ``S`` trains steps ``S+1, ...``
again; the records the interrupted run wrote after ``S`` are superseded. They
are moved from ``metrics.jsonl`` to ``metrics.superseded.jsonl`` (nothing is
lost, nothing is repeated in the curves) and TensorBoard purges its events
after ``S`` (``purge_step``).
"""

from __future__ import annotations

import json
import os
import time
from typing import Mapping

import jax


class MetricsWriter:
    """Appends one JSON object per record; mirrors scalars to TensorBoard when enabled."""

    def __init__(self, workdir: str, *, tensorboard: bool = True, resumed_from: int | None = None,
                 finished: bool = False):
        """``resumed_from``: the step of the checkpoint a resumed run starts from (records after it are
        superseded; -1 for a fresh run); ``finished``: that checkpoint ends the run, whose final
        evaluation (at that step) is done again."""
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if self.enabled and resumed_from is not None:
            supersede_after(self.path, resumed_from, final_eval_again=finished)
        if self.enabled and tensorboard:
            from tensorboardX import SummaryWriter  # Only needed when TensorBoard output is on.

            purge = None if resumed_from is None else resumed_from + 1
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge)

    def write(self, step: int, metrics: Mapping[str, float], *, split: str) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "split": split, "time": time.time(), **{k: float(v) for k, v in metrics.items()}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(f"{split}/{key}", float(value), int(step))
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str) -> list[dict]:
    """The records of a metrics file (a line cut short by a kill is left out)."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def supersede_after(path: str, step: int, *, final_eval_again: bool = False) -> int:
    """Moves the records of steps after ``step`` from ``path`` to ``*.superseded.jsonl``; returns how many.

    ``final_eval_again``: the evaluation records of step ``step`` too (a finished run evaluated again).
    """
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    keep, moved = [], []
    for line in lines:
        try:
            record = json.loads(line)
            later = int(record["step"]) > step or (
                final_eval_again and int(record["step"]) == step and record.get("split") == "eval")
        except (ValueError, KeyError, TypeError):
            later = True  # a line cut short by the kill
        (moved if later else keep).append(line if line.endswith("\n") else line + "\n")
    if not moved:
        return 0
    with open(os.path.splitext(path)[0] + ".superseded.jsonl", "a", encoding="utf-8") as f:
        f.writelines(moved)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(keep)
    os.replace(tmp, path)
    return len(moved)
