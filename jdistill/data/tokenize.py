"""Turning text examples into token ids with a prompt/response split.

A tokenized example is the prompt tokens followed by the response tokens and
the tokenizer's EOS; only the response tokens (EOS included) are trained on.
A chat example (``messages``) is its conversation rendered with the
tokenizer's chat template; every assistant turn is trained on (its end-of-turn
token included), the prompt is everything before the last assistant turn
(:mod:`jdistill.data.chat`). Truncation is a policy with reported counts:

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

from jdistill.data.chat import ChatTemplateError, chat_tokens
from jdistill.data.records import DataError, SkipReport, TextExample

TRUNCATION_POLICIES = ("truncate", "drop")


@dataclasses.dataclass(frozen=True)
class TokenizedSide:
    """One tokenizer's view of an example: ``ids`` = prompt + response (+ EOS).

    Attributes:
      ids: int32 token ids.
      prompt_len: the tokens before the (last) response: what generation starts from.
      spans: ``[start, end)`` token ranges trained on, in order, the last one
        starting at ``prompt_len``; ``None`` = ``((prompt_len, len(ids)),)``.
        A chat example has one per assistant turn.
    """

    ids: np.ndarray
    prompt_len: int
    spans: tuple[tuple[int, int], ...] | None = None

    @property
    def trained_spans(self) -> tuple[tuple[int, int], ...]:
        """The token ranges trained on (targets); position ``t - 1`` predicts token ``t``."""
        return self.spans if self.spans is not None else ((self.prompt_len, len(self.ids)),)


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


def tokenize_side(
    tokenizer: Any, example: TextExample, *, max_len: int, max_prompt_len: int, policy: str,
) -> tuple[TokenizedSide | None, str | None, bool]:
    """Tokenizes one example. Returns (side or None, skip reason or None, was_truncated)."""
    if example.messages is not None:
        try:
            ids, spans = chat_tokens(tokenizer, example.messages)
        except ChatTemplateError as error:
            return None, str(error), False
        return truncate_side(ids.tolist(), spans, max_len=max_len, max_prompt_len=max_prompt_len, policy=policy,
                             bos_id=getattr(tokenizer, "bos_token_id", None))
    prompt = _encode(tokenizer, example.prompt, add_special_tokens=not example.prompt_is_rendered)
    response = _encode(tokenizer, example.response, add_special_tokens=False) + [eos_id_of(tokenizer)]
    if not prompt:
        return None, "prompt tokenizes to nothing", False
    ids = prompt + response
    return truncate_side(ids, [(len(prompt), len(ids))], max_len=max_len, max_prompt_len=max_prompt_len,
                         policy=policy, bos_id=getattr(tokenizer, "bos_token_id", None))


def truncate_side(
    ids: Sequence[int], spans: Sequence[tuple[int, int]], *, max_len: int, max_prompt_len: int, policy: str,
    bos_id: int | None = None,
) -> tuple[TokenizedSide | None, str | None, bool]:
    """Applies the truncation policy to ``ids`` whose trained token ranges are ``spans``.

    The prompt (the tokens before the last span) keeps its last
    ``max_prompt_len`` tokens (and its leading ``bos_id``, when it starts with
    it), then the sequence is cut at ``max_len``; the spans move and shrink with
    it. Returns (side or None, skip reason or None, was_truncated).
    """
    spans = [(int(a), int(b)) for a, b in spans]
    prompt_len = spans[-1][0]
    if prompt_len <= max_prompt_len and len(ids) <= max_len:
        return _side(ids, spans), None, False
    if policy == "drop":
        return None, TOO_LONG, False
    cut = max(0, prompt_len - max_prompt_len)
    head = 1 if cut and bos_id is not None and int(ids[0]) == int(bos_id) and max_prompt_len > 1 else 0
    # Tokens [head, head + cut) go; later positions move back by cut.
    ids = (list(ids[:head]) + list(ids[head + cut :]))[:max_len]
    moved = [(max(a, head + cut, 1 + cut) - cut, min(max(b, head + cut) - cut, len(ids))) for a, b in spans]
    if moved[-1][1] <= moved[-1][0]:
        return None, NO_ROOM, False
    return _side(ids, [(a, b) for a, b in moved if b > a]), None, True


def _side(ids: Sequence[int], spans: list[tuple[int, int]]) -> TokenizedSide:
    """A side whose last span starts the response; the one-response layout keeps ``spans=None``."""
    prompt_len = spans[-1][0]
    plain = len(spans) == 1 and spans[0][1] == len(ids)
    return TokenizedSide(np.asarray(ids, np.int32), prompt_len, None if plain else tuple(spans))


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
    batches always hold the same texts. Chat examples are rendered with each
    side's own chat template.
    """
    if policy not in TRUNCATION_POLICIES:
        raise DataError(f"data.truncation must be one of {TRUNCATION_POLICIES}, got {policy!r}.")
    if not 0 < max_prompt_len < max_len:
        raise DataError(
            f"data.max_prompt_len ({max_prompt_len}) must be positive and below data.max_len ({max_len}) "
            "so that there is room for a response."
        )
    if teacher_tokenizer is not None and getattr(teacher_tokenizer, "chat_template", None) is None and any(
            e.messages is not None for e in examples):
        raise DataError(
            "Chat 'messages' records are rendered with each model's own chat template, but the teacher's tokenizer "
            "has none; give the teacher a tokenizer with a chat template (teacher.tokenizer) or use prompt/response "
            "records."
        )
    stats = TokenizeStats(examples=len(examples))
    out = []
    for example in examples:
        student, reason, truncated = tokenize_side(
            student_tokenizer, example, max_len=max_len, max_prompt_len=max_prompt_len, policy=policy,
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
        out.append(TokenizedExample(example.id, student, teacher, example.response))
    return out, stats

