"""An append-only JSONL file of generated records that survives crashes.

* Every batch is serialised first and appended with **one** ``write``, then
  flushed and ``fsync``-ed: a crash loses at most the batch being written.
* On opening, an existing file is scanned: the ids of its complete lines are
  the records already answered, and a trailing partial line (a write cut
  short) is truncated away, so the file is always valid JSONL.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Mapping


def parse_done_ids(data: bytes, path: str) -> set[str]:
    """Ids of the complete JSONL lines in ``data`` (a trailing partial line is ignored)."""
    done = set()
    for number, line in enumerate(data[: data.rfind(b"\n") + 1].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path}:{number} is not valid JSON ({error}); it was not written by "
                "jdistill or was edited. Fix or remove the line, or write to another file."
            ) from error
        if not isinstance(record, dict) or "id" not in record:
            raise ValueError(f"{path}:{number} has no 'id'; cannot resume from this file.")
        done.add(str(record["id"]))
    return done


def read_done_ids(path: str | os.PathLike) -> set[str]:
    """Ids already in a response file, without modifying it (empty if it does not exist).

    For the processes of a multi-process run that do not write.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return set()
    with open(path, "rb") as f:
        return parse_done_ids(f.read(), path)


class ResponseWriter:
    """Appends records (dicts with an ``"id"``) to a JSONL file.

    Attributes:
        path: the file.
        done_ids: ids of the records already in the file.
        truncated_bytes: bytes of a partial last line removed on opening.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        self.done_ids: set[str] = set()
        self.truncated_bytes = 0
        if os.path.exists(self.path):
            self._recover()
        self._file = open(self.path, "ab")

    def _recover(self) -> None:
        with open(self.path, "rb") as f:
            data = f.read()
        end = data.rfind(b"\n") + 1  # 0 when there is no complete line.
        if end < len(data):
            self.truncated_bytes = len(data) - end
            with open(self.path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
        self.done_ids = parse_done_ids(data[:end], self.path)

    def write(self, records: Iterable[Mapping]) -> int:
        """Appends ``records`` in one write, then flushes and fsyncs; returns the count."""
        records = list(records)
        if not records:
            return 0
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        self._file.write(payload)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.done_ids.update(str(r["id"]) for r in records)
        return len(records)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ResponseWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
