"""Prompts for generation: records -> the text a model answers, with counted skips.

Reads the same record shapes as training (:mod:`jdistill.data.records`) but
needs no response:

* ``prompt_response``: a prompt field (``prompt`` by default); any response
  is ignored;
* ``dolly``: ``instruction`` and optional ``context``, rendered with the
  Dolly templates of :mod:`jdistill.data.records` (or ``prompt_template``);
* ``messages``: a chat list of ``{"role", "content"}``; a trailing assistant
  message is dropped (it is what gets answered anew) and the conversation
  must then end with a user message.

Then, in order: ``prompt_template`` (``{prompt}``, for ``prompt_response``),
an optional chain-of-thought template (``{prompt}``; for chats it rewrites the
last user message) and, when the tokenizer has one (``chat_template="auto"``),
the chat template with the generation prompt. Records without a usable
prompt are counted in a :class:`~jdistill.data.records.SkipReport`, never
dropped silently.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from jdistill.data.records import DataError, SkipReport, render_dolly_prompt

PROMPT_FORMATS = ("prompt_response", "dolly", "messages")
CHAT_TEMPLATE_MODES = ("auto", "on", "off")


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One prompt to answer.

    Attributes:
        id: the record's id (its ``id_field``, else its index in the files).
        prompt: what output records store as the prompt: the prompt text
            (after ``prompt_template``; after the chain-of-thought template
            only when ``keep_cot_in_prompt``) or, for chats, the message list.
        text: the exact text the model reads.
        rendered: ``text`` came from the chat template, which adds the special
            tokens itself (tokenize it without adding any).
    """

    id: str
    prompt: str | list
    text: str
    rendered: bool


@dataclasses.dataclass(frozen=True)
class PromptOptions:
    """How records become prompts.

    Attributes:
        fmt: ``"auto"`` or one of :data:`PROMPT_FORMATS`.
        prompt_field: the prompt field of ``prompt_response`` records.
        id_field: the field holding a record's id (its index when absent).
        prompt_template: ``None`` or a format string with ``{prompt}``
            (``prompt_response``) or ``{instruction}``/``{context}`` (dolly).
        cot_template: ``None`` or a chain-of-thought format string with
            ``{prompt}``.
        keep_cot_in_prompt: store the chain-of-thought prompt in
            :attr:`Prompt.prompt` (default: the prompt without it).
        chat_template: ``"auto"`` (when the tokenizer has one), ``"on"``
            (required) or ``"off"``.
    """

    fmt: str = "auto"
    prompt_field: str = "prompt"
    id_field: str = "id"
    prompt_template: str | None = None
    cot_template: str | None = None
    keep_cot_in_prompt: bool = False
    chat_template: str = "auto"

    def __post_init__(self):
        if self.fmt != "auto" and self.fmt not in PROMPT_FORMATS:
            raise DataError(f"Unknown data.format {self.fmt!r}; choose 'auto' or one of {PROMPT_FORMATS}.")
        if self.chat_template not in CHAT_TEMPLATE_MODES:
            raise DataError(
                f"data.chat_template must be one of {CHAT_TEMPLATE_MODES}, got {self.chat_template!r}."
            )
        if self.cot_template is not None and "{prompt}" not in self.cot_template:
            raise DataError(
                f"data.cot_template must contain '{{prompt}}', got {self.cot_template!r}."
            )


def detect_prompt_format(record: Any, prompt_field: str = "prompt") -> str:
    """The prompt format of a dataset, from the fields of its first record."""
    fields = set(record) if isinstance(record, dict) else set()
    if "messages" in fields:
        return "messages"
    if prompt_field in fields:
        return "prompt_response"
    if "instruction" in fields:
        return "dolly"
    raise DataError(
        f"Cannot tell the prompt format from the fields {sorted(fields)}: expected "
        f"'{prompt_field}' (prompt_response), 'instruction' (dolly) or 'messages'. Set "
        "--config.data.format or --config.data.prompt_field."
    )


def _uses_chat_template(tokenizer, mode: str) -> bool:
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if mode == "on" and not has_template:
        raise DataError(
            "data.chat_template='on' but the tokenizer has no chat template; use 'auto' or 'off'."
        )
    return mode != "off" and has_template


def _string_prompt(record: dict, fmt: str, options: PromptOptions) -> tuple[str | None, str | None]:
    """``(prompt, None)`` or ``(None, skip reason)`` for non-chat records."""
    if fmt == "dolly":
        return render_dolly_prompt(record, options.prompt_template)
    prompt = record.get(options.prompt_field)
    if not isinstance(prompt, str):
        return None, f"missing or non-string '{options.prompt_field}'"
    if not prompt.strip():
        return None, "empty prompt"
    if options.prompt_template is not None:
        prompt = options.prompt_template.format(prompt=prompt)
    return prompt, None


def _chat_messages(record: dict) -> tuple[list | None, str | None]:
    """The conversation to answer, or a skip reason."""
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return None, "field 'messages' is not a non-empty list"
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str) or "role" not in message:
            return None, "a message lacks a string 'content' or a 'role'"
    if messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    if not messages or messages[-1]["role"] != "user":
        return None, "conversation does not end with a user message"
    if not messages[-1]["content"].strip():
        return None, "empty prompt"
    return [dict(m) for m in messages], None


def _with_cot(text: str, options: PromptOptions) -> str:
    return text if options.cot_template is None else options.cot_template.format(prompt=text)


def _render(messages: list, tokenizer) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def to_prompts(
    records: Iterable[Any], tokenizer, options: PromptOptions = PromptOptions()
) -> tuple[list[Prompt], SkipReport]:
    """Turns raw records into :class:`Prompt` s (in record order).

    Args:
        records: dicts as read by :func:`jdistill.data.records.load_records`.
        tokenizer: a transformers tokenizer (for its chat template).
        options: see :class:`PromptOptions`.

    Returns:
        The prompts and a report of the records left out (no usable prompt,
        duplicate id).
    """
    records = list(records)
    skips = SkipReport()
    if not records:
        return [], skips
    fmt = detect_prompt_format(records[0], options.prompt_field) if options.fmt == "auto" else options.fmt
    chat = _uses_chat_template(tokenizer, options.chat_template)
    if fmt == "messages" and not chat:
        raise DataError(
            "Chat 'messages' records need the tokenizer's chat template; this tokenizer has none "
            "(or data.chat_template='off')."
        )
    prompts, seen = [], set()
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            skips.add("not a mapping", str(index))
            continue
        record_id = str(record.get(options.id_field, index))
        if record_id in seen:
            skips.add("duplicate id", record_id)
            continue
        if fmt == "messages":
            messages, problem = _chat_messages(record)
            if problem is not None:
                skips.add(problem, record_id)
                continue
            asked = messages[:-1] + [{**messages[-1], "content": _with_cot(messages[-1]["content"], options)}]
            stored = asked if options.keep_cot_in_prompt else messages
            prompts.append(Prompt(record_id, stored, _render(asked, tokenizer), rendered=True))
        else:
            prompt, problem = _string_prompt(record, fmt, options)
            if problem is not None:
                skips.add(problem, record_id)
                continue
            asked = _with_cot(prompt, options)
            stored = asked if options.keep_cot_in_prompt else prompt
            if chat:
                text = _render([{"role": "user", "content": asked}], tokenizer)
                prompts.append(Prompt(record_id, stored, text, rendered=True))
            else:
                prompts.append(Prompt(record_id, stored, asked, rendered=False))
        seen.add(record_id)
    return prompts, skips
