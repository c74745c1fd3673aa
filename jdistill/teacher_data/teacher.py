"""The teacher that answers: its model, tokenizer and stop tokens."""

from __future__ import annotations

import json
import os

import ml_collections

from jdistill import models


class TeacherConfigError(ValueError):
    """A teacher setting that cannot work, with the setting to change."""


def check_teacher_path(path: str) -> None:
    if not path:
        raise TeacherConfigError(
            "No teacher given: set --config.teacher.path=DIR, a Hugging Face model directory "
            "(config.json, *.safetensors and tokenizer files). A built-in demo teacher is not "
            "available yet; until it is, a path is required."
        )
    if not os.path.isdir(path):
        raise TeacherConfigError(f"teacher.path {path!r} is not a directory.")


def load_tokenizer(path: str):
    """The transformers tokenizer of ``path``; its pad token defaults to EOS."""
    from transformers import AutoTokenizer  # Heavy; only the data path needs it.

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_teacher(config: ml_collections.ConfigDict, mesh=None):
    """``(model, tokenizer)`` from ``config.teacher`` (path, tokenizer, dtypes)."""
    check_teacher_path(config.path)
    tokenizer = load_tokenizer(config.tokenizer or config.path)
    model = models.load_pretrained(
        config.path, dtype=config.param_dtype, compute_dtype=config.compute_dtype, mesh=mesh
    )
    return model, tokenizer


def _as_ids(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def generation_config_eos_ids(path: str) -> list[int]:
    """``eos_token_id`` of ``path/generation_config.json`` (an id or a list), if any."""
    file = os.path.join(path, "generation_config.json")
    if not os.path.isfile(file):
        return []
    with open(file, encoding="utf-8") as f:
        return _as_ids(json.load(f).get("eos_token_id"))


def parse_id_list(text: str) -> list[int]:
    """``"2, 32000"`` -> ``[2, 32000]``; ``""`` -> ``[]``."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise TeacherConfigError(f"expected comma-separated token ids, got {text!r}") from error


def resolve_eos_ids(override: str, tokenizer, teacher_path: str, model_config) -> tuple[int, ...]:
    """The ids that end a response.

    ``override`` (comma-separated ids) wins; otherwise the union of the
    tokenizer's EOS, ``generation_config.json``'s ``eos_token_id`` (chat
    models list their end-of-turn token there) and the model config's.
    """
    explicit = parse_id_list(override)
    if explicit:
        return tuple(explicit)
    found = _as_ids(getattr(tokenizer, "eos_token_id", None))
    found += generation_config_eos_ids(teacher_path)
    found += _as_ids(model_config.eos_token_id)
    ordered = tuple(dict.fromkeys(found))
    if not ordered:
        raise TeacherConfigError(
            "The teacher has no EOS token (tokenizer, generation_config.json and config.json); "
            "set --config.generation.eos_ids=ID[,ID...] so responses can end."
        )
    return ordered
