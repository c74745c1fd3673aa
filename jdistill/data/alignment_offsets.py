"""Exact token alignment by character offsets (DSKDv2's ETA, TRL's GOLD), on the host.

Both tokenizers split the same response text. A *span* is the smallest group
of consecutive student tokens and consecutive teacher tokens that cover the
same characters: span boundaries are the character positions where a token
ends on both sides. Offsets come from the fast tokenizers
(``return_offsets_mapping``), never from decoding, so:

* a multi-byte character split over several byte-level tokens (which all carry
  the same character offsets) stays inside one span;
* whitespace markers (``Ġ``, ``▁``) and whitespace-only tokens do not matter:
  only token *ends* define boundaries, and a token ending inside the other
  side's token is merged into the span that closes after it;
* special tokens (BOS on one side only) are not part of the response text and
  are never aligned; the EOS each side appends forms its own final span.

:func:`eta_extras` turns the spans into per-position arrays for the training
batch (``configs/eta.py``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from jdistill.data.records import DataError


def response_offsets(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and ``(start, end)`` character offsets of ``text`` without special tokens."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(encoded["input_ids"]), [tuple(map(int, o)) for o in encoded["offset_mapping"]]


def _monotone_ends(offsets: Sequence[tuple[int, int]]) -> list[int]:
    ends, running = [], 0
    for _, end in offsets:
        running = max(running, end)
        ends.append(running)
    return ends


def exact_spans(student_offsets, teacher_offsets) -> list[tuple[list[int], list[int]]]:
    """Groups token indices of both sides into spans covering the same characters.

    Args:
      student_offsets: ``[(start, end), ...]`` of the student's tokens, in order.
      teacher_offsets: the same for the teacher's tokens of the same text.

    Returns:
      ``[(student_indices, teacher_indices), ...]`` in text order; every token of
      either side is in exactly one span. A span may have no token on one side
      only at the very end (e.g. trailing whitespace one tokenizer drops).
    """
    s_ends, t_ends = _monotone_ends(student_offsets), _monotone_ends(teacher_offsets)
    spans, i, j = [], 0, 0
    while i < len(s_ends) and j < len(t_ends):
        s_group, t_group = [i], [j]
        i, j = i + 1, j + 1
        while s_ends[s_group[-1]] != t_ends[t_group[-1]]:
            if s_ends[s_group[-1]] < t_ends[t_group[-1]]:
                if i == len(s_ends):
                    break
                s_group.append(i)
                i += 1
            else:
                if j == len(t_ends):
                    break
                t_group.append(j)
                j += 1
        boundary = max(s_ends[s_group[-1]], t_ends[t_group[-1]])
        # Tokens that end at the boundary too (pieces of one split character) belong here.
        while i < len(s_ends) and s_ends[i] <= boundary:
            s_group.append(i)
            i += 1
        while j < len(t_ends) and t_ends[j] <= boundary:
            t_group.append(j)
            j += 1
        spans.append((s_group, t_group))
    if i < len(s_ends) or j < len(t_ends):  # one side ran out first: the rest joins the last span
        rest = (list(range(i, len(s_ends))), list(range(j, len(t_ends))))
        if spans:
            spans[-1] = (spans[-1][0] + rest[0], spans[-1][1] + rest[1])
        else:
            spans.append(rest)
    return spans


def response_span_ids(student_tokenizer: Any, teacher_tokenizer: Any, response: str) -> dict:
    """Span index of every response token on both sides, EOS included as the last span.

    Returns ``{'student': [n_s + 1] int32, 'teacher': [n_t + 1] int32, 'num_spans': int}``
    aligned with :func:`jdistill.data.tokenize.tokenize_side`'s response tokens
    (the response encoded without special tokens, then EOS).
    """
    _, s_offsets = response_offsets(student_tokenizer, response)
    _, t_offsets = response_offsets(teacher_tokenizer, response)
    spans = exact_spans(s_offsets, t_offsets)
    student = np.zeros(len(s_offsets) + 1, np.int32)
    teacher = np.zeros(len(t_offsets) + 1, np.int32)
    for span, (s_group, t_group) in enumerate(spans):
        student[s_group] = span
        teacher[t_group] = span
    student[-1] = teacher[-1] = len(spans)
    return {"student": student, "teacher": teacher, "num_spans": len(spans) + 1}


def eta_extras(example: Any, student_tokenizer: Any, teacher_tokenizer: Any) -> dict:
    """The exact-alignment method's per-position arrays of one :class:`jdistill.data.TokenizedExample`.

    The response (``example.response``) is split into spans by
    :func:`exact_spans`; the EOS that each side appends (a chat template's end of
    turn) is a span of its own. Of a chat, the last assistant turn is aligned.
    Student position ``prompt_len - 1 + k`` predicts the student's ``k``-th
    response token, and likewise on the teacher's side, so a span's
    distributions are those of the positions predicting its tokens.

    Returns:
      Arrays over the student sequence (``[n]``; 0 outside the response):
      ``eta_span`` (int32, the span of the token predicted there),
      ``eta_teacher_start`` / ``eta_teacher_end`` (int32, the teacher positions
      ``[start, end)`` predicting the same span's teacher tokens) and
      ``eta_mask`` (float32, 1 where the span is complete on both sides: a
      truncated response loses its last spans).

    Raises:
      DataError: the example's response tokens are not those of its text (the
        pipeline must tokenize the response on its own, as
        :func:`jdistill.data.tokenize.tokenize_side` does).
    """
    sides = []
    for tokenizer, side, who in ((student_tokenizer, example.student, "student"),
                                 (teacher_tokenizer, example.teacher, "teacher")):
        ids, offsets = response_offsets(tokenizer, example.response)
        present = [int(x) for x in np.asarray(side.ids)[side.prompt_len:]]
        # The response text's tokens, then one end token: the EOS, or a chat template's end of turn.
        expected = (ids + present[len(ids) : len(ids) + 1])[: len(present)]
        if present != expected:
            raise DataError(
                f"Example {example.id!r}: the {who}'s response tokens {present[:8]}... are not the tokens of its "
                f"response text {expected[:8]}...; exact alignment needs the response tokenized on its own."
            )
        sides.append((offsets, len(present), side.prompt_len))
    (s_offsets, s_present, s_prompt), (t_offsets, t_present, t_prompt) = sides
    spans = exact_spans(s_offsets, t_offsets)
    spans.append(([len(s_offsets)], [len(t_offsets)]))  # the EOS of each side
    n = len(example.student.ids)
    out = {
        "eta_span": np.zeros(n, np.int32),
        "eta_teacher_start": np.zeros(n, np.int32),
        "eta_teacher_end": np.zeros(n, np.int32),
        "eta_mask": np.zeros(n, np.float32),
    }
    for span, (s_group, t_group) in enumerate(spans):
        complete = bool(s_group) and bool(t_group) and max(s_group) < s_present and max(t_group) < t_present
        for k in s_group:
            if k >= s_present:
                continue
            position = s_prompt - 1 + k
            out["eta_span"][position] = span
            if complete:
                out["eta_teacher_start"][position] = t_prompt - 1 + min(t_group)
                out["eta_teacher_end"][position] = t_prompt - 1 + max(t_group) + 1
                out["eta_mask"][position] = 1.0
    return out
