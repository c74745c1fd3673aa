"""Reading training records into (prompt, response) text pairs.

Three record shapes are understood:

* ``dolly``: ``instruction``, optional ``context``, ``response`` (Databricks
  Dolly; the prompt is rendered with a template, by default the one the
  MiniLLM / DistiLLM / DSKD papers use);
* ``prompt_response``: ``prompt`` and ``response`` (also what
  ``jdistill.generate`` writes, so teacher-generated and API-teacher data are
  read the same way);
* ``messages``: a chat ``messages`` list of ``{"role", "content"}``; the last
  message must be the assistant's. The conversation is rendered with the
  tokenizer's chat template and every assistant turn is trained on
  (:mod:`jdistill.data.chat`); the last turn is the response of evaluation and
  everything before it the prompt.

Local json / jsonl / parquet files are read directly (hub ids with ``datasets``
when the machine is online). Malformed records and lines are either a clear
error naming the file and line, or a counted skip (``on_bad_record``), never
dropped silently.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Any, Iterable, Sequence

FORMATS = ("dolly", "prompt_response", "messages")

# The instruction template of the MiniLLM / DistiLLM / DSKD Dolly experiments.
DOLLY_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
DOLLY_TEMPLATE_WITH_CONTEXT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{context}\n\n### Response:\n"
)

_REQUIRED = {
    "dolly": ("instruction", "response"),
    "prompt_response": ("prompt", "response"),
    "messages": ("messages",),
}

_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


class DataError(ValueError):
    """A dataset or record that cannot be used, with what to change."""


@dataclasses.dataclass(frozen=True)
class TextExample:
    """One training example as text. ``prompt_is_rendered`` marks chat-template output.

    ``messages``: a chat record's whole conversation (``prompt`` and ``response``
    are then its rendering up to the last assistant turn and that turn's text);
    tokenization renders it with each tokenizer's own chat template and trains on
    every assistant turn (:func:`jdistill.data.chat.chat_tokens`).
    """

    id: str
    prompt: str
    response: str
    prompt_is_rendered: bool = False
    messages: tuple | None = None


@dataclasses.dataclass
class SkipReport:
    """Counts of records left out, by reason; printed in the run log and report."""

    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: dict = dataclasses.field(default_factory=dict)

    def add(self, reason: str, record_id: str) -> None:
        self.counts[reason] += 1
        self.examples.setdefault(reason, record_id)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: "SkipReport") -> None:
        self.counts.update(other.counts)
        for reason, rid in other.examples.items():
            self.examples.setdefault(reason, rid)

    def summary(self) -> str:
        if not self.counts:
            return "no records skipped"
        parts = [f"{n} {reason} (e.g. record {self.examples[reason]})" for reason, n in sorted(self.counts.items())]
        return f"{self.total} records skipped: " + "; ".join(parts)


def load_records(
    files: Sequence[str] | str, *, split: str = "train", on_bad_record: str = "error",
    skips: "SkipReport | None" = None,
) -> list[dict]:
    """Loads json/jsonl/parquet files (or one hub dataset id) into a list of dicts.

    Local files are read directly, every time (no ``datasets`` cache, which
    keys local files by modification time and would serve stale content for a
    file replaced with its mtime preserved): JSON lines one record per line,
    ``.json`` a JSON array of records (or JSON lines), parquet with pyarrow. A
    line that is not valid UTF-8 or JSON is an error naming the file and line,
    or, with ``on_bad_record='skip'`` and a ``skips`` report, a counted skip.
    A hub id goes through ``datasets.load_dataset`` (needs the network).
    """
    if isinstance(files, str):
        files = [f.strip() for f in files.split(",") if f.strip()]
    files = list(files)
    if not files:
        raise DataError("No data files given: set --config.data.train_files=PATH[,PATH...] (json, jsonl or parquet).")
    local = [os.path.exists(f) for f in files]
    if all(local):
        suffixes = {os.path.splitext(f)[1].lower() for f in files}
        if not suffixes <= set(_FILE_BUILDERS):
            raise DataError(
                f"Data files must all be one of {sorted(_FILE_BUILDERS)}; got suffixes {sorted(suffixes)}."
            )
        records = []
        for path in files:
            records.extend(read_local_file(path, on_bad_record=on_bad_record, skips=skips))
        if not records:
            raise DataError(f"No usable records in {', '.join(files)}: {skips.summary()}.")
        return records
    if len(files) == 1 and not any(local):
        missing = files[0]
        looks_like_path = (os.path.isabs(missing) or missing.startswith((".", "~")) or missing.count("/") > 1
                           or "\\" in missing or os.path.splitext(missing)[1].lower() in _FILE_BUILDERS)
        if looks_like_path:
            raise DataError(f"Data file {missing!r} does not exist.")
        import datasets  # Imported here: only hub datasets need it.

        datasets.disable_progress_bars()  # jdistill reports the data itself.
        return list(datasets.load_dataset(missing, split=split))  # A hub id; needs network.
    missing = [f for f, ok in zip(files, local) if not ok]
    raise DataError(f"Data files not found: {missing}.")


def _bad_line(path: str, line: int, problem: str, on_bad_record: str, skips, fix: str = "Fix the line") -> None:
    if on_bad_record == "skip" and skips is not None:
        skips.add(problem, f"{os.path.basename(path)}:{line}")
        return
    fix += " or set --config.data.on_bad_record=skip" if skips is not None else ""
    raise DataError(f"{path}, line {line}: {problem}. {fix}.")


def _json_lines(path: str, raw: bytes, on_bad_record: str, skips) -> list[dict]:
    records = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as error:
            _bad_line(path, number, f"not valid UTF-8 (byte 0x{line[error.start]:02x} at column {error.start + 1})",
                      on_bad_record, skips, fix="Re-encode the file as UTF-8")
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            _bad_line(path, number, f"not valid JSON ({error.msg} at column {error.colno})", on_bad_record, skips)
            continue
        records.append(record)
    return records


def read_local_file(path: str, *, on_bad_record: str = "error", skips: "SkipReport | None" = None) -> list[dict]:
    """The records of one local json/jsonl/parquet file (see :func:`load_records`)."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            records = pq.read_table(path).to_pylist()
        except Exception as error:  # noqa: BLE001 - pyarrow raises several kinds
            raise DataError(f"{path}: cannot be read as parquet ({error}).") from error
    else:
        with open(path, "rb") as f:
            raw = f.read()
        if raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte-order mark
        stripped = raw.lstrip()
        if suffix == ".json" and stripped.startswith(b"["):
            try:
                records = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as error:
                line = raw[: error.start].count(b"\n") + 1
                raise DataError(f"{path}, line {line}: not valid UTF-8; re-encode the file as UTF-8.") from None
            except json.JSONDecodeError as error:
                raise DataError(f"{path}, line {error.lineno}: not valid JSON ({error.msg} at column "
                                f"{error.colno}).") from None
        else:
            records = _json_lines(path, raw, on_bad_record, skips)
    if not records and not (skips is not None and skips.total):
        raise DataError(f"{path} holds no records (the file is empty).")
    return records


def detect_format(records: Sequence[dict]) -> str:
    """The record shape of a dataset, from the fields of its first record."""
    if not records:
        raise DataError("The dataset is empty.")
    fields = set(records[0])
    for fmt in ("messages", "prompt_response", "dolly"):
        if set(_REQUIRED[fmt]) <= fields:
            return fmt
    raise DataError(
        f"Cannot tell the record format from the fields {sorted(fields)}. Supported shapes: "
        "dolly (instruction, context?, response), prompt_response (prompt, response), "
        "messages (chat list). Rename the fields or set --config.data.format."
    )


def _text_field(record: dict, name: str) -> str | None:
    value = record.get(name)
    return value if isinstance(value, str) else None


def to_text_examples(
    records: Iterable[dict],
    *,
    fmt: str = "auto",
    tokenizer: Any = None,
    prompt_template: str | None = None,
    on_bad_record: str = "skip",
    allow_empty_response: bool = False,
) -> tuple[list[TextExample], SkipReport]:
    """Normalises raw records into :class:`TextExample` s.

    Args:
      records: dicts as read by :func:`load_records`.
      fmt: one of :data:`FORMATS` or ``'auto'``.
      tokenizer: needed for ``messages`` (its chat template renders the prompt).
      prompt_template: for ``dolly`` and ``prompt_response``: a format string
        with ``{instruction}``/``{context}`` or ``{prompt}``; ``None`` uses
        the Dolly templates, and the prompt as is for ``prompt_response``.
      on_bad_record: ``'skip'`` (count and report) or ``'error'``.
      allow_empty_response: keep records whose response is empty (prompts for
        a method that generates its own responses); otherwise they are bad
        records.

    Returns:
      The examples and a :class:`SkipReport` of what was left out.
    """
    if on_bad_record not in ("skip", "error"):
        raise DataError(f"data.on_bad_record must be 'skip' or 'error', got {on_bad_record!r}.")
    records = list(records)
    fmt = detect_format(records) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise DataError(f"Unknown data.format {fmt!r}; choose 'auto' or one of {FORMATS}.")
    if fmt == "messages" and getattr(tokenizer, "chat_template", None) is None:
        raise DataError(
            "Chat 'messages' records need a tokenizer with a chat template; this tokenizer has none. "
            "Use prompt/response records or a tokenizer that defines chat_template."
        )
    skips = SkipReport()
    examples = []
    for index, record in enumerate(records):
        record_id = str(record.get("id", index)) if isinstance(record, dict) else str(index)
        problem, example = _convert(record, record_id, fmt, tokenizer, prompt_template, allow_empty_response)
        if problem is None:
            examples.append(example)
        elif on_bad_record == "error":
            raise DataError(f"Record {record_id}: {problem}. Fix the record or set --config.data.on_bad_record=skip.")
        else:
            skips.add(problem, record_id)
    return examples, skips


def render_dolly_prompt(record: dict, prompt_template: str | None) -> tuple[str | None, str | None]:
    """A Dolly record's prompt: ``(prompt, None)``, or ``(None, why it cannot be rendered)``.

    ``prompt_template`` (with ``{instruction}`` and ``{context}``) replaces the
    MiniLLM / DistiLLM / DSKD templates when given.
    """
    instruction, context = record.get("instruction"), record.get("context") or ""
    if not isinstance(instruction, str) or not isinstance(context, str):
        return None, "missing or non-string 'instruction'/'context'"
    if not instruction.strip():
        return None, "empty instruction"
    if prompt_template is not None:
        return prompt_template.format(instruction=instruction, context=context), None
    if context.strip():
        return DOLLY_TEMPLATE_WITH_CONTEXT.format(instruction=instruction, context=context), None
    return DOLLY_TEMPLATE.format(instruction=instruction), None


def _convert(record, record_id, fmt, tokenizer, prompt_template, allow_empty_response=False):
    if not isinstance(record, dict):
        return "not a mapping", None
    for field in _REQUIRED[fmt]:
        if record.get(field) is None:
            return f"missing field '{field}'", None
    if fmt == "messages":
        return _convert_messages(record, record_id, tokenizer)
    response = _text_field(record, "response")
    if response is None:
        return "field 'response' is not a string", None
    if not response.strip() and not allow_empty_response:
        return "empty response", None
    if fmt == "dolly":
        prompt, problem = render_dolly_prompt(record, prompt_template)
        if problem is not None:
            return problem, None
    else:
        prompt = _text_field(record, "prompt")
        if prompt is None:
            return "field 'prompt' is not a string", None
        if not prompt.strip():
            return "empty prompt", None
        if prompt_template is not None:
            prompt = prompt_template.format(prompt=prompt)
    return None, TextExample(record_id, prompt, response)


def _convert_messages(record, record_id, tokenizer):
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        return "field 'messages' is not a non-empty list", None
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str) or "role" not in message:
            return "a message lacks a string 'content' or a 'role'", None
    if messages[-1]["role"] != "assistant":
        return "last message is not the assistant's", None
    if not messages[-1]["content"].strip():
        return "empty response", None
    if messages[0]["role"] == "assistant":
        return "conversation starts with the assistant", None
    messages = tuple(dict(m) for m in messages)
    prompt = tokenizer.apply_chat_template(list(messages[:-1]), tokenize=False, add_generation_prompt=True)
    return None, TextExample(record_id, prompt, messages[-1]["content"], prompt_is_rendered=True,
                             messages=messages)
