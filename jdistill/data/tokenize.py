"""Turning text examples into token ids with a prompt/response split.

A tokenized example is the prompt tokens followed by the response tokens and
the tokenizer's EOS; only the response tokens (EOS included) are trained on.
Truncation is a policy with reported counts:

* ``'truncate'``: the prompt keeps its last ``max_prompt_len`` tokens (and
  its leading BOS, when it starts with one), then the response is cut to fit
  ``max_len`` (it loses its EOS);
* ``'drop'``: an example that does not fit is left out.

Either way an example left with no response token is dropped, and counted.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from jdistill.data import stored_topk as stored_topk_lib
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


# Skip reasons of examples left out because they do not fit (counted as ``TokenizeStats.dropped``).
TOO_LONG = "too long (truncation=drop)"
NO_ROOM = "no room for the response after truncation"


@dataclasses.dataclass
class TokenizeStats:
    """``truncated``: examples kept but cut to fit; ``dropped``: examples left out because they do not fit
    (both among ``examples``, every example given; the other skips are in ``skips`` too)."""

    truncated: int = 0
    skips: SkipReport = dataclasses.field(default_factory=SkipReport)
    dropped: int = 0
    examples: int = 0


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


def _keep_end(prompt: list[int], limit: int, tokenizer: Any) -> list[int]:
    """The prompt's last ``limit`` tokens, still starting with the BOS the tokenizer (or chat template) put first."""
    if len(prompt) <= limit:
        return prompt
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and prompt[0] == bos and limit > 1:
        return [bos] + prompt[len(prompt) - (limit - 1):]
    return prompt[-limit:]


def tokenize_side(
    tokenizer: Any, example: TextExample, *, max_len: int, max_prompt_len: int, policy: str,
    response_ids: Sequence[int] | None = None,
) -> tuple[TokenizedSide | None, str | None, bool]:
    """Tokenizes one example. Returns (side or None, skip reason or None, was_truncated).

    ``response_ids`` replaces the tokenized response and its EOS (a teacher's
    generated ids, kept exactly).
    """
    prompt = _encode(tokenizer, example.prompt, add_special_tokens=not example.prompt_is_rendered)
    if response_ids is None:
        response = _encode(tokenizer, example.response, add_special_tokens=False) + [eos_id_of(tokenizer)]
    else:
        response = [int(t) for t in response_ids]
    if not prompt:
        return None, "prompt tokenizes to nothing", False
    fits = len(prompt) <= max_prompt_len and len(prompt) + len(response) <= max_len
    if fits:
        return TokenizedSide(np.asarray(prompt + response, np.int32), len(prompt)), None, False
    if policy == "drop":
        return None, TOO_LONG, False
    prompt = _keep_end(prompt, max_prompt_len, tokenizer)
    response = response[: max_len - len(prompt)]
    if not response:
        return None, NO_ROOM, False
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
    stored_topk: bool = False,
) -> tuple[list[TokenizedExample], TokenizeStats]:
    """Tokenizes examples for the student (and the teacher, when given).

    An example is kept only if both sides keep it, so student and teacher
    batches always hold the same texts.

    With ``stored_topk``, an example carrying the teacher's stored top-k targets
    (:mod:`jdistill.data.stored_topk`) takes the teacher's response ids as its
    response tokens (after checking that they decode to its response text with
    this tokenizer, i.e. that the teacher's tokenizer is the student's) and gets
    ``extras`` ``teacher_topk_ids`` / ``teacher_topk_logprobs`` ``[len(ids), k]``
    lined up with the targets. Examples without stored targets are tokenized as usual.
    """
    if policy not in TRUNCATION_POLICIES:
        raise DataError(f"data.truncation must be one of {TRUNCATION_POLICIES}, got {policy!r}.")
    if not 0 < max_prompt_len < max_len:
        raise DataError(
            f"data.max_prompt_len ({max_prompt_len}) must be positive and below data.max_len ({max_len}) "
            "so that there is room for a response."
        )
    stats = TokenizeStats(examples=len(examples))
    out = []
    for example in examples:
        targets = example.teacher_topk if stored_topk else None
        if targets is not None:
            _check_decodes_to_response(student_tokenizer, example, targets)
        student, reason, truncated = tokenize_side(
            student_tokenizer, example, max_len=max_len, max_prompt_len=max_prompt_len, policy=policy,
            response_ids=None if targets is None else targets.response_ids,
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
            stats.dropped += int(reason.endswith((TOO_LONG, NO_ROOM)))
            continue
        stats.truncated += int(truncated)
        extras = {}
        if targets is not None:
            extras = stored_topk_lib.topk_extras(
                targets, num_positions=len(student.ids), prompt_len=student.prompt_len,
                response_len=len(student.ids) - student.prompt_len,
            )
        out.append(TokenizedExample(example.id, student, teacher, example.response, extras))
    return out, stats


def _check_decodes_to_response(tokenizer: Any, example: TextExample, targets) -> None:
    """Stored response ids must be this tokenizer's ids of the response text."""
    text = tokenizer.decode(stored_topk_lib.response_text_ids(targets), skip_special_tokens=True)
    if text != example.response:
        raise DataError(
            f"Record {example.id}: its stored response_ids decode to {text[:60]!r} with the student's tokenizer, "
            f"not to its response {example.response[:60]!r}. Stored teacher top-k targets need the teacher's "
            "tokenizer to be the student's; regenerate them with a teacher that shares the student's tokenizer."
        )
