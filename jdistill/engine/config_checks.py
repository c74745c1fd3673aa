"""Checks of the shared config groups, run before anything is loaded.

:func:`validate_config` checks every numeric field of ``train``, ``eval``,
``optimizer``, ``data``, ``logging``, ``mesh`` and ``distributed`` against its
allowed range (:data:`RULES`), the fields with a fixed set of values, the
relations between fields, and that the model directories and local data files
the config names exist; a field a config leaves to the command line (a
real-model preset's paths) must be set. The first problem
found is a :class:`~jdistill.engine.run_setup.ConfigError` naming the field,
its allowed range and the value given, e.g.::

    train.batch_size must be an integer >= 1; got -8.

A method's own settings (``method.*``) check themselves
(:mod:`jdistill.methods.settings`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re

import ml_collections

from jdistill.engine import compiler_options, run_setup
from jdistill.engine.run_setup import ConfigError

# Groups whose every numeric field must have a rule (tests/engine/test_config_checks.py holds them to it).
CHECKED_GROUPS = ("train", "eval", "optimizer", "data", "logging", "mesh", "distributed")


@dataclasses.dataclass(frozen=True)
class Rule:
    """``low <= value <= high`` (open ends with ``low_open`` / ``high_open``); ``integer``: a whole number."""

    integer: bool
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    note: str = ""  # what special values mean, appended to the message

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{kind} in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {self.high:g}"
        return kind

    def accepts(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True


def _int(low=None, high=None, note="") -> Rule:
    return Rule(True, low, high, note=note)


def _float(low=None, high=None, *, low_open=False, high_open=False, note="") -> Rule:
    return Rule(False, low, high, low_open, high_open, note)


RULES: dict[str, Rule] = {
    "train.steps": _int(0, note="0 = train.epochs x steps per epoch"),
    "train.epochs": _int(0, note="used when train.steps is 0"),
    "train.batch_size": _int(1),
    "train.grad_accum": _int(1),
    "train.seed": _int(0),
    "train.checkpoint_every": _int(0, note="0 = only at the end"),
    "train.keep_checkpoints": _int(1),
    "train.max_bad_steps": _int(1),
    "train.max_bad_fraction": _float(0, 1),
    "eval.every": _int(-1, note="0 = only at the end, -1 = once per epoch"),
    "eval.batch_size": _int(1),
    "eval.max_examples": _int(1),
    "eval.max_new_tokens": _int(1),
    "eval.temperature": _float(0, note="0 = greedy"),
    "eval.top_p": _float(0, 1, low_open=True),
    "eval.top_k": _int(0, note="0 = off"),
    "eval.num_samples": _int(1),
    "optimizer.learning_rate": _float(0, low_open=True),
    "optimizer.method_learning_rate": _float(0),
    "optimizer.teacher_learning_rate": _float(0, note="0 = optimizer.learning_rate"),
    "optimizer.warmup_steps": _int(0),
    "optimizer.warmup_ratio": _float(0, 1, high_open=True),
    "optimizer.min_lr_ratio": _float(0, 1),
    "optimizer.weight_decay": _float(0),
    "optimizer.b1": _float(0, 1, high_open=True),
    "optimizer.b2": _float(0, 1, high_open=True),
    "optimizer.eps": _float(0, low_open=True),
    "optimizer.grad_clip": _float(0, note="0 = no clipping"),
    "data.eval_fraction": _float(0, 1, low_open=True, high_open=True),
    "data.max_len": _int(2),
    "data.max_prompt_len": _int(1),
    "data.lm_coef": _float(0),
    "logging.every": _int(1),
    "mesh.data": _int(-1, note="-1 = all devices left over"),
    "mesh.fsdp": _int(-1, note="-1 = all devices left over"),
    "mesh.tensor": _int(-1, note="-1 = all devices left over"),
    "distributed.num_processes": _int(0),
    "distributed.process_id": _int(-1),
}

CHOICES: dict[str, tuple] = {
    "data.truncation": ("truncate", "drop"),
    "data.on_bad_record": ("skip", "error"),
    "data.format": ("auto", "dolly", "prompt_response", "messages"),
    "data.packing": ("auto", "on", "off"),
    "teacher.layers": ("auto", "stacked", "per_layer"),
    "student.remat": ("none", "full", "dots"),
    "student.param_dtype": ("float32", "bfloat16", "float16"),
    "student.compute_dtype": ("float32", "bfloat16", "float16"),
    "teacher.param_dtype": ("float32", "bfloat16", "float16"),
    "teacher.compute_dtype": ("float32", "bfloat16", "float16"),
    "student.lora.base_dtype": ("", "float32", "bfloat16", "float16"),
    "teacher.lora.base_dtype": ("", "float32", "bfloat16", "float16"),
    "student.lora.export": ("merged", "adapter", "both"),
    "teacher.lora.export": ("merged", "adapter", "both"),
}

# A hub id: "name" or "owner/name" (what transformers accepts); anything else that is not a file is a path.
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".txt")


def looks_like_path(value: str) -> bool:
    """Whether ``value`` can only be meant as a local path (not a Hugging Face hub id)."""
    return (
        os.path.isabs(value) or value.startswith((".", "~")) or "\\" in value or value.count("/") > 1
        or not _HUB_ID.fullmatch(value) or os.path.splitext(value)[1].lower() in _DATA_SUFFIXES
    )


def _get(config: ml_collections.ConfigDict, key: str):
    node = config
    for part in key.split("."):
        if not isinstance(node, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)) or part not in node:
            return dataclasses.MISSING
        node = node[part]
    return node


def validate_config(config: ml_collections.ConfigDict, *, check_paths: bool = True) -> None:
    """Raises :class:`ConfigError` for the first field out of its range (see the module docstring)."""
    check_required(config)
    for key, rule in RULES.items():
        value = _get(config, key)
        if value is dataclasses.MISSING:
            continue
        if not rule.accepts(value):
            note = f" ({rule.note})" if rule.note else ""
            raise ConfigError(f"{key} must be {rule.describe()}{note}; got {value!r}.")
    for key, allowed in CHOICES.items():
        value = _get(config, key)
        if value is not dataclasses.MISSING and value not in allowed:
            raise ConfigError(f"{key} must be one of {' | '.join(repr(a) for a in allowed)}; got {value!r}.")
    _check_relations(config)
    for model in ("student", "teacher"):
        if "lora" in config[model]:
            run_setup.lora_spec(config, model)  # rank, alpha, dropout, targets: errors name <model>.lora.<field>
    if check_paths:
        check_model_paths(config)
        check_data_paths(config)


def _unset(config, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        if isinstance(value, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
            keys += _unset(value, f"{prefix}{key}.")
        elif value is None:
            keys.append(f"{prefix}{key}")
    return keys


def check_required(config) -> None:
    """Fields a config leaves for the command line (ml_collections placeholders, ``None`` until set) must be set.

    A real-model preset (``configs/<name>.py:real``) names no models or data:
    the error lists every such field at once, as the flags that set them.
    """
    missing = _unset(config)
    if missing:
        flags = " ".join(f"--config.{key}=..." for key in missing)
        raise ConfigError(
            f"Required settings are not set: {', '.join(missing)}. This config has no default for them (a real-model "
            f"preset, configs/<name>.py:real, names no models or data): add {flags} (model paths are Hugging Face "
            "directories, data files json/jsonl/parquet)."
        )


def _check_relations(config) -> None:
    train, data, opt = config.train, config.data, config.optimizer
    if train.steps == 0 and train.epochs == 0:
        raise ConfigError("Set train.steps > 0, or train.epochs >= 1 with train.steps = 0.")
    if train.batch_size % train.grad_accum:
        raise ConfigError(
            f"train.batch_size ({train.batch_size}) must be a multiple of train.grad_accum ({train.grad_accum})."
        )
    if not data.max_prompt_len < data.max_len:
        raise ConfigError(
            f"data.max_prompt_len ({data.max_prompt_len}) must be below data.max_len ({data.max_len}) so that "
            "there is room for a response."
        )
    if opt.warmup_steps and opt.warmup_ratio:
        raise ConfigError(
            f"Set one of optimizer.warmup_steps ({opt.warmup_steps}) and optimizer.warmup_ratio "
            f"({opt.warmup_ratio}); set the other to 0."
        )
    if train.xla_options not in ("auto", "none"):
        try:
            compiler_options.parse(train.xla_options)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    sizes = [config.mesh.data, config.mesh.fsdp, config.mesh.tensor]
    if sizes.count(-1) > 1 or 0 in sizes:
        raise ConfigError(f"mesh.data / mesh.fsdp / mesh.tensor must be >= 1, with at most one -1; got {sizes}.")


def _check_model_dir(key: str, path: str) -> None:
    expanded = os.path.expanduser(path)
    if not os.path.isdir(expanded):
        raise ConfigError(
            f"{key}: no such directory: {path!r}. jdistill loads models from local Hugging Face directories "
            "(config.json, *.safetensors, tokenizer files); download the model first "
            "(e.g. huggingface-cli download ORG/NAME --local-dir DIR) and pass DIR."
        )
    config_file = os.path.join(expanded, "config.json")
    if not os.path.isfile(config_file):
        raise ConfigError(f"{key}: {path!r} has no config.json; it is not a Hugging Face model directory.")
    try:
        with open(config_file, encoding="utf-8") as f:
            json.load(f)
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"{key}: {config_file} is not valid JSON ({error}); the model directory is damaged: download or export "
            "it again."
        ) from None


def _comma_list(config, key: str) -> list[str]:
    value = _get(config, key)
    if not value or value is dataclasses.MISSING:
        return []
    return [part.strip() for part in str(value).split(",")]


def check_model_paths(config) -> None:
    """Model directories must exist locally; tokenizer paths too, unless they are hub ids."""
    if not config.student.path:
        raise ConfigError(
            "No student given: set --config.student.path=DIR (a Hugging Face directory with config.json, "
            "*.safetensors and tokenizer files)."
        )
    _check_model_dir("student.path", config.student.path)
    if config.teacher.path:
        _check_model_dir("teacher.path", config.teacher.path)
        for path in _comma_list(config, "teacher.extra_paths"):
            if path:
                _check_model_dir("teacher.extra_paths", path)
    for key in ("student.tokenizer", "teacher.tokenizer"):
        value = _get(config, key)
        if value and not os.path.exists(os.path.expanduser(value)) and looks_like_path(value):
            raise ConfigError(f"{key}: no such directory: {value!r}.")
    for value in _comma_list(config, "teacher.extra_tokenizers"):
        if value and not os.path.exists(os.path.expanduser(value)) and looks_like_path(value):
            raise ConfigError(f"teacher.extra_tokenizers: no such directory: {value!r}.")


def check_data_paths(config) -> None:
    """Local data files named in ``data.*_files`` must exist (a bare ``owner/name`` may be a hub dataset)."""
    for key in ("data.train_files", "data.eval_files", "data.lm_files"):
        value = _get(config, key)
        if not value or value is dataclasses.MISSING:
            continue
        for name in (f.strip() for f in str(value).split(",")):
            if name and not os.path.exists(os.path.expanduser(name)) and looks_like_path(name):
                raise ConfigError(f"{key}: data file {name!r} does not exist.")
