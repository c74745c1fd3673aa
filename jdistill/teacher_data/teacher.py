"""The teacher that answers: its model and tokenizer (stop tokens: :func:`jdistill.sampling.stop_tokens`)."""

from __future__ import annotations

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


def parse_id_list(text: str) -> list[int]:
    """``"2, 32000"`` -> ``[2, 32000]``; ``""`` -> ``[]``."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise TeacherConfigError(f"expected comma-separated token ids, got {text!r}") from error
