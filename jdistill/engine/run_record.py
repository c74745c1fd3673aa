"""The run's resolved config, saved in the workdir, and the check that a resume uses the same one.

Every run writes ``<workdir>/config.json``: ``{"sha256": ..., "config": {...}}``,
the config the engine ran with (every field, ``demo:`` paths resolved,
command-line overrides applied), and its SHA-256 over the canonical JSON
(sorted keys, no spaces) of ``config``. A run that resumes from a checkpoint
compares its config with the saved one first, before anything is loaded:

* the same (up to :data:`EXEMPT` fields, which change how the run is watched
  or started, not what it computes): the run resumes;
* different: the run stops with :class:`ConfigChangedError`, naming each
  changed field with its saved and new values;
* different, with ``--config.train.allow_config_change=true``: the run
  resumes with the new values, says so, saves the new config and records
  the change in ``metrics.jsonl`` (a ``"split": "config_change"`` record at
  the resumed step with ``changed``: ``{field: [saved, new]}``).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from typing import Any, Mapping

from jdistill.engine.run_setup import ConfigError

CONFIG_FILE = "config.json"

# Fields that may change on a resume without notice: how the run is watched, started or kept, not what it computes.
EXEMPT = ("train.allow_config_change", "train.checkpoint_every", "train.keep_checkpoints", "logging.",
          "distributed.")

_SHOWN = 8  # changed fields named in the message


class ConfigChangedError(ConfigError):
    """A resume whose config differs from the one the workdir's run was started with."""


def plain(config) -> dict:
    """The config as JSON-normal nested dicts (tuples become lists)."""
    return json.loads(json.dumps(config.to_dict(), sort_keys=True, default=str))


def config_hash(config_dict: Mapping[str, Any]) -> str:
    text = json.dumps(config_dict, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


_ABSENT = "<absent>"


def changed_fields(saved: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, list]:
    """``{field: [saved value, new value]}`` of every field that differs (:data:`EXEMPT` ones left out)."""
    before, after = flatten(saved), flatten(new)
    out = {}
    for key in sorted(set(before) | set(after)):
        if key.startswith(EXEMPT):
            continue
        old, value = before.get(key, _ABSENT), after.get(key, _ABSENT)
        if old != value:
            out[key] = [old, value]
    return out


def describe_changes(changes: Mapping[str, list]) -> str:
    shown = [f"{key} {old!r} -> {new!r}" for key, (old, new) in list(changes.items())[:_SHOWN]]
    more = len(changes) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def path(workdir: str) -> str:
    return os.path.join(workdir, CONFIG_FILE)


def load(workdir: str) -> dict | None:
    """The saved record ``{"sha256", "config"}``, or ``None`` (none saved, or unreadable)."""
    try:
        with open(path(workdir), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("config"), dict) else None


def save(workdir: str, config_dict: Mapping[str, Any]) -> str:
    """Writes ``config.json`` atomically (every process may write the same file); returns the hash."""
    digest = config_hash(config_dict)
    target = path(workdir)
    tmp = f"{target}.{socket.gethostname()}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"sha256": digest, "config": config_dict}, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, target)
    return digest


def checkpoint_step(directory: str) -> int | None:
    """The newest checkpoint step in ``directory`` (local or remote; ``None``: none), creating nothing."""
    import orbax.checkpoint as ocp

    where = directory if "://" in directory else os.path.abspath(directory)
    manager = ocp.CheckpointManager(where, options=ocp.CheckpointManagerOptions(create=False))
    try:
        return manager.latest_step()
    finally:
        manager.close()


def check_and_save(config, workdir: str, *, resume_step: int | None) -> dict[str, list]:
    """Compares ``config`` with the saved one when the run resumes from ``resume_step``, then saves it.

    Returns the changed fields a resume proceeds with (``train.allow_config_change``),
    ``{}`` when nothing changed or the run starts afresh; raises
    :class:`ConfigChangedError` when fields changed and changes are not allowed.
    """
    current = plain(config)
    changes: dict[str, list] = {}
    saved = load(workdir) if resume_step is not None else None
    if saved is not None and saved.get("sha256") != config_hash(current):
        changes = changed_fields(saved["config"], current)
        if changes and not bool(config.train.allow_config_change):
            raise ConfigChangedError(
                f"The workdir {workdir} holds a run (checkpoint of step {resume_step}) started with another "
                f"config; changed: {describe_changes(changes)}. Resume with the saved config ({path(workdir)}), "
                "use a new --workdir, or pass --config.train.allow_config_change=true to resume with the new "
                "values (recorded in metrics.jsonl)."
            )
    save(workdir, current)
    return changes
