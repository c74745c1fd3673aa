"""Weights & Biases backend of the metrics writer (``--config.logging.wandb=true``; off by default).

Needs the ``wandb`` package (``pip install 'jdistill[wandb]'``); without a
network, ``WANDB_MODE=offline`` writes the run under ``<workdir>/wandb`` for a
later ``wandb sync``. What is logged:

* the run config (every field, as saved in ``config.json``) as the W&B run config;
* every scalar record of ``metrics.jsonl`` as ``<split>/<name>``, against the
  run's own step counter (the W&B metric ``step``, so that the steps a resumed
  run trains again are logged again rather than dropped);
* a table of sample generations per evaluation (``eval/samples``), and events
  such as a config change on resume (``events/<kind>``).

A resumed run continues the same W&B run: its id is kept in
``<workdir>/wandb_run_id``.
"""

from __future__ import annotations

import os
import secrets
from typing import Any, Mapping, Sequence

from jdistill.engine.run_setup import ConfigError

RUN_ID_FILE = "wandb_run_id"


def require() -> None:
    """Raises the :class:`ConfigError` of a missing ``wandb`` package."""
    _import_wandb()


def _import_wandb():
    try:
        import wandb
    except ImportError:
        raise ConfigError(
            "logging.wandb=true needs the wandb package: pip install 'jdistill[wandb]' (or wandb), or set "
            "logging.wandb=false."
        ) from None
    return wandb


def _run_id(workdir: str, *, resumed: bool) -> str:
    path = os.path.join(workdir, RUN_ID_FILE)
    if resumed and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            run_id = f.read().strip()
        if run_id:
            return run_id
    run_id = secrets.token_hex(4)
    with open(path, "w", encoding="utf-8") as f:
        f.write(run_id + "\n")
    return run_id


class WandbLogger:
    """One W&B run per workdir; :class:`~jdistill.engine.metrics_writer.MetricsWriter` calls it."""

    def __init__(self, settings, workdir: str, config: Mapping[str, Any] | None, *, resumed: bool):
        self._wandb = _import_wandb()
        self._run = self._wandb.init(
            project=str(settings.wandb_project) or "jdistill",
            entity=str(settings.wandb_entity) or None,
            name=str(settings.wandb_name) or os.path.basename(os.path.abspath(workdir)),
            id=_run_id(workdir, resumed=resumed),
            resume="allow",
            dir=workdir,
        )
        if config is not None:
            self._run.config.update(dict(config), allow_val_change=True)
        self._run.define_metric("step")
        self._run.define_metric("*", step_metric="step")

    def log(self, step: int, values: Mapping[str, float]) -> None:
        self._run.log({**values, "step": int(step)})

    def samples(self, step: int, rows: Sequence[Mapping[str, str]]) -> None:
        columns = ["prompt", "reference", "prediction"]
        table = self._wandb.Table(columns=columns, data=[[row.get(c, "") for c in columns] for row in rows])
        self._run.log({"eval/samples": table, "step": int(step)})

    def event(self, step: int, kind: str, fields: Mapping[str, Any]) -> None:
        table = self._wandb.Table(columns=["key", "value"], data=[[k, repr(v)] for k, v in fields.items()])
        self._run.log({f"events/{kind}": table, "step": int(step)})

    def close(self) -> None:
        self._run.finish()
