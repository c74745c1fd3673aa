"""Turning text examples into token ids with a prompt/response split.

A tokenized example is the prompt tokens followed by the response tokens and
the tokenizer's EOS; only the response tokens (EOS included) are trained on.
Truncation is a policy with reported counts:

* ``'truncate'``: the prompt keeps its last ``max_prompt_len`` tokens, then
  the response is cut to fit ``max_len`` (it loses its EOS);
* ``'drop'``: an example that does not fit is left out.

Either way an example left with no response token is dropped, and counted.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from jdistill.data.records import DataError, SkipReport, TextExample

TRUNCATION_POLICIES = ("truncate", "drop")


@dataclasses.dataclass(frozen=True)
class TokenizedSide:
    """One tokenizer's view of an example: ``ids`` = prompt + response (+ EOS)."""

    ids: np.ndarray
    prompt_len: int


@dataclasses.dataclass(frozen=True)
class TokenizedExample:
    """One training example as the batcher sees it.

    Attributes:
      id: the record's id.
      student: the student tokenization.
      teacher: the teacher tokenization, only when the vocabularies differ.
      response: the reference response text (for generation-based evaluation).
      extras: per-position host-side arrays whose first axis runs over the
        student sequence (``len(student.ids)``), e.g. alignments or stored
        teacher targets; :func:`jdistill.data.batching.collate` zero-pads each
        to ``[B, T, ...]`` under its key.
    """

    id: str
    student: TokenizedSide
    teacher: TokenizedSide | None = None
    response: str = ""
    extras: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TokenizeStats:
    truncated: int = 0
    skips: SkipReport = dataclasses.field(default_factory=SkipReport)


def eos_id_of(tokenizer: Any) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise DataError(
            "The tokenizer has no eos_token_id; responses must end with EOS so the student learns to stop. "
            "Set eos_token in the tokenizer's special tokens."
        )
    return int(eos)


def _encode(tokenizer, text: str, add_special_tokens: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def tokenize_side(
    tokenizer: Any, example: TextExample, *, max_len: int, max_prompt_len: int, policy: str
) -> tuple[TokenizedSide | None, str | None, bool]:
    """Tokenizes one example. Returns (side or None, skip reason or None, was_truncated)."""
    prompt = _encode(tokenizer, example.prompt, add_special_tokens=not example.prompt_is_rendered)
    response = _encode(tokenizer, example.response, add_special_tokens=False) + [eos_id_of(tokenizer)]
    if not prompt:
        return None, "prompt tokenizes to nothing", False
    fits = len(prompt) <= max_prompt_len and len(prompt) + len(response) <= max_len
    if fits:
        return TokenizedSide(np.asarray(prompt + response, np.int32), len(prompt)), None, False
    if policy == "drop":
        return None, "too long (truncation=drop)", False
    prompt = prompt[-max_prompt_len:]
    response = response[: max_len - len(prompt)]
    if not response:
        return None, "no room for the response after truncation", False
    return TokenizedSide(np.asarray(prompt + response, np.int32), len(prompt)), None, True


def tokenize_examples(
    examples: Sequence[TextExample],
    student_tokenizer: Any,
    *,
    max_len: int,
    max_prompt_len: int,
    policy: str = "truncate",
    teacher_tokenizer: Any = None,
    teacher_max_len: int | None = None,
) -> tuple[list[TokenizedExample], TokenizeStats]:
    """Tokenizes examples for the student (and the teacher, when given).

    An example is kept only if both sides keep it, so student and teacher
    batches always hold the same texts.
    """
    if policy not in TRUNCATION_POLICIES:
        raise DataError(f"data.truncation must be one of {TRUNCATION_POLICIES}, got {policy!r}.")
    if not 0 < max_prompt_len < max_len:
        raise DataError(
            f"data.max_prompt_len ({max_prompt_len}) must be positive and below data.max_len ({max_len}) "
            "so that there is room for a response."
        )
    stats = TokenizeStats()
    out = []
    for example in examples:
        student, reason, truncated = tokenize_side(
            student_tokenizer, example, max_len=max_len, max_prompt_len=max_prompt_len, policy=policy
        )
        teacher = None
        if student is not None and teacher_tokenizer is not None:
            t_max = teacher_max_len or max_len
            teacher, reason_t, truncated_t = tokenize_side(
                teacher_tokenizer,
                example,
                max_len=t_max,
                max_prompt_len=min(max_prompt_len, t_max - 1),
                policy=policy,
            )
            truncated = truncated or truncated_t
            if teacher is None:
                reason = f"teacher side: {reason_t}"
        if reason is not None:
            stats.skips.add(reason, example.id)
            continue
        stats.truncated += int(truncated)
        out.append(TokenizedExample(example.id, student, teacher, example.response))
    return out, stats
