"""Metrics to ``workdir/metrics.jsonl`` and TensorBoard (process 0 only).

A run resumed from the checkpoint of step ``S`` trains steps ``S+1, ...``
again; the records the interrupted run wrote after ``S`` are superseded. They
are moved from ``metrics.jsonl`` to ``metrics.superseded.jsonl`` (nothing is
lost, nothing is repeated in the curves) and TensorBoard purges its events
after ``S`` (``purge_step``).

Beside the scalars, TensorBoard gets the run config as text (``config``, every
field with its description: :mod:`jdistill.engine.config_help`) and a few
sample generations per evaluation (``eval/samples``); events such as a config
change on resume are JSONL records of their own ``split``
(:meth:`MetricsWriter.write_event`). An optional Weights & Biases backend
(:mod:`jdistill.engine.wandb_logger`) receives the same scalars, samples and events.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping, Sequence

import jax


class MetricsWriter:
    """Appends one JSON object per record; mirrors scalars to TensorBoard (and W&B) when enabled."""

    def __init__(self, workdir: str, *, tensorboard: bool = True, resumed_from: int | None = None,
                 finished: bool = False, config_text: str | None = None, wandb: Any = None):
        """``resumed_from``: the step of the checkpoint a resumed run starts from (records after it are
        superseded; -1 for a fresh run); ``finished``: that checkpoint ends the run, whose final
        evaluation (at that step) is done again. ``config_text``: the run config as text, for
        TensorBoard. ``wandb``: a :class:`~jdistill.engine.wandb_logger.WandbLogger` (or ``None``)."""
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        self._wandb = wandb if self.enabled else None
        if self.enabled and resumed_from is not None:
            supersede_after(self.path, resumed_from, final_eval_again=finished)
        if self.enabled and tensorboard:
            from tensorboardX import SummaryWriter  # Only needed when TensorBoard output is on.

            purge = None if resumed_from is None else resumed_from + 1
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge)
            if config_text:
                self._tb.add_text("config", _code_block(config_text), max(resumed_from or 0, 0))
                self._tb.flush()

    def _append(self, record: Mapping[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def write(self, step: int, metrics: Mapping[str, float], *, split: str) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in metrics.items()}
        self._append({"step": int(step), "split": split, "time": time.time(), **values})
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(f"{split}/{key}", value, int(step))
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(int(step), {f"{split}/{key}": value for key, value in values.items()})

    def write_samples(self, step: int, samples: Sequence[Mapping[str, str]], *, limit: int = 5) -> None:
        """A few (prompt, reference, prediction) triples of an evaluation: TensorBoard text and W&B table."""
        if not self.enabled or not samples:
            return
        rows = list(samples)[:limit]
        if self._tb is not None:
            self._tb.add_text("eval/samples", samples_markdown(rows), int(step))
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.samples(int(step), rows)

    def write_event(self, step: int, kind: str, fields: Mapping[str, Any]) -> None:
        """A record that is not a scalar (e.g. ``config_change``): JSONL with ``split`` = ``kind``, text elsewhere."""
        if not self.enabled:
            return
        self._append({"step": int(step), "split": kind, "time": time.time(), **fields})
        if self._tb is not None:
            self._tb.add_text(f"events/{kind}", _code_block(json.dumps(dict(fields), indent=1, default=str)),
                              int(step))
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.event(int(step), kind, fields)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.close()
            self._wandb = None


def _code_block(text: str) -> str:
    """``text`` as a Markdown code block (TensorBoard renders its text panel as Markdown)."""
    return "\n".join("    " + line for line in text.splitlines())


def samples_markdown(samples: Sequence[Mapping[str, str]]) -> str:
    """A Markdown table of (prompt, reference, prediction) triples."""
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", "<br>")

    lines = ["| prompt | reference | prediction |", "|---|---|---|"]
    lines += [f"| {cell(s.get('prompt', '')[-300:])} | {cell(s.get('reference', ''))} | "
              f"{cell(s.get('prediction', ''))} |" for s in samples]
    return "\n".join(lines)


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
