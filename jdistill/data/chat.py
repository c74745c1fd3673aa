"""Chat conversations → token ids and the assistant tokens to train on.

A ``messages`` record is rendered whole with the tokenizer's chat template
(``apply_chat_template``) and every assistant turn is trained on, not only the
last one. Which tokens belong to an assistant turn is found in one of two ways:

* the template marks them itself with ``{% generation %} ... {% endgeneration %}``
  (as the templates made for TRL's ``assistant_only_loss``): the tokens
  ``apply_chat_template(..., return_assistant_tokens_mask=True)`` marks;
* otherwise by rendering prefixes: assistant turn ``i`` is the text between
  ``render(messages[:i], add_generation_prompt=True)`` (the conversation so far
  and the assistant header) and ``render(messages[:i + 1])`` (the turn's content
  and its end-of-turn marker) with trailing whitespace removed, so the
  end-of-turn token is trained on but a newline the template writes after it is
  not. Both renderings must be prefixes of the whole conversation's rendering
  (true of ordinary templates; a template that rewrites earlier turns, e.g. one
  that drops earlier reasoning, needs ``{% generation %}`` tags). The tokens
  whose first character lies in such a span are that turn's tokens (character
  offsets of a fast tokenizer; a slow tokenizer tokenizes the prefixes instead
  and must tokenize them as prefixes of the whole).

The sequence ends with the last assistant turn (what a template writes after it
is dropped), and the prompt is everything before the last assistant turn's
first token: the conversation and the assistant header that generation starts
from. Each side of a cross-vocabulary method renders with its own tokenizer's
template.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

ASSISTANT = "assistant"
_GENERATION_TAG = re.compile(r"{%-?\s*generation\s*-?%}")


class ChatTemplateError(ValueError):
    """A conversation the tokenizer's chat template cannot render into trainable turns."""


def template_text(tokenizer: Any) -> str | None:
    """The tokenizer's (default) chat template as a string, or ``None``."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    return template if isinstance(template, str) else None


def has_generation_tags(tokenizer: Any) -> bool:
    """Whether the template marks assistant tokens with ``{% generation %}``."""
    template = template_text(tokenizer)
    return template is not None and _GENERATION_TAG.search(template) is not None


def _render(tokenizer: Any, messages: Sequence[dict], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of True in ``mask``."""
    padded = np.concatenate([[False], mask.astype(bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def _tagged_turns(tokenizer: Any, messages: Sequence[dict]) -> tuple[list[int], list[tuple[int, int]]]:
    out = tokenizer.apply_chat_template(
        list(messages), tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids = [int(t) for t in out["input_ids"]]
    return ids, _runs(np.asarray(out["assistant_masks"], bool))


def _character_spans(tokenizer: Any, messages: Sequence[dict], full: str) -> list[tuple[int, int]]:
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != ASSISTANT:
            continue
        before = _render(tokenizer, messages[:i], add_generation_prompt=True)
        through = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not (full.startswith(before) and full.startswith(through) and len(through) >= len(before)):
            raise ChatTemplateError(
                "the chat template does not render the conversation's beginning as a prefix of the whole "
                f"(assistant turn {i}); mark the assistant tokens with {{% generation %}} tags in the template"
            )
        end = len(through.rstrip())
        if end > len(before):
            spans.append((len(before), end))
    return spans


def _token_spans_from_offsets(offsets, char_spans) -> list[tuple[int, int]]:
    starts = np.asarray([start for start, _ in offsets], np.int64)
    spans = []
    for a, b in char_spans:
        inside = np.flatnonzero((starts >= a) & (starts < b))
        if len(inside):
            spans.append((int(inside[0]), int(inside[-1]) + 1))
    return spans


def _token_spans_from_prefixes(tokenizer, full: str, ids: list[int], char_spans) -> list[tuple[int, int]]:
    spans = []
    for a, b in char_spans:
        bounds = []
        for cut in (a, b):
            prefix = list(tokenizer(full[:cut], add_special_tokens=False)["input_ids"])
            if ids[: len(prefix)] != prefix:
                raise ChatTemplateError(
                    "the tokenizer does not tokenize the conversation's beginning as a prefix of the whole; use a "
                    "fast tokenizer or mark the assistant tokens with {% generation %} tags in the template"
                )
            bounds.append(len(prefix))
        if bounds[1] > bounds[0]:
            spans.append((bounds[0], bounds[1]))
    return spans


def chat_tokens(tokenizer: Any, messages: Sequence[dict]) -> tuple[np.ndarray, tuple[tuple[int, int], ...]]:
    """The token ids of a conversation and the ``[start, end)`` token spans of its assistant turns.

    Args:
      tokenizer: a Hugging Face tokenizer with a chat template.
      messages: ``{"role", "content"}`` dicts; the last one is the assistant's.

    Returns:
      ``(ids, spans)``: ``ids`` int32, ending with the last assistant turn;
      ``spans`` in order, the last one the last assistant turn (non-empty).

    Raises:
      ChatTemplateError: the template does not render the conversation, its
        renderings are not prefixes of one another, or the last assistant turn
        has no token.
    """
    try:
        if has_generation_tags(tokenizer):
            ids, spans = _tagged_turns(tokenizer, messages)
        else:
            full = _render(tokenizer, messages, add_generation_prompt=False)
            char_spans = _character_spans(tokenizer, messages, full)
            if getattr(tokenizer, "is_fast", False):
                encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
                ids = [int(t) for t in encoded["input_ids"]]
                spans = _token_spans_from_offsets(encoded["offset_mapping"], char_spans)
            else:
                ids = [int(t) for t in tokenizer(full, add_special_tokens=False)["input_ids"]]
                spans = _token_spans_from_prefixes(tokenizer, full, ids, char_spans)
    except ChatTemplateError:
        raise
    except Exception as error:  # A template's own raise_exception, or a rendering failure.
        raise ChatTemplateError(f"the chat template failed on this conversation: {error}") from error
    spans = [(max(a, 1), b) for a, b in spans if b > max(a, 1)]  # a target needs a token before it
    if not spans:
        raise ChatTemplateError("the chat template leaves no assistant token to train on")
    return np.asarray(ids[: spans[-1][1]], np.int32), tuple(spans)
