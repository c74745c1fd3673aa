"""A teacher's top-k next-token log-probabilities on disk: sharded, memory-mapped, resumable.

Offline distillation runs the teacher once and keeps, for every trained
position of every example, its ``k`` most likely next tokens and their
log-probabilities (of the full softmax at temperature 1). Two writers fill the
same format: the teacher-forced pass over a dataset's own responses
(:mod:`jdistill.teacher_data.teacher_forced`, ``source = 'teacher_forced'``) and
teacher generation (``jdistill.generate`` with ``num_topk_logprobs``,
``source = 'generated'``). Training memory-maps the arrays and copies out one
example's rows when its batch is built.

A store is a directory::

    manifest.json               format, source, k, vocab_size, tokenizer fingerprint, dtypes, max_id,
                                the settings it was written with, totals and bytes per token
    shard-00000.targets.npy     [R]    the token each row predicts
    shard-00000.ids.npy         [R, k] the teacher's top-k ids, most likely first
    shard-00000.logprobs.npy    [R, k] their log-probabilities (float16 by default)
    shard-00000.index.json      per example: id, first row, spans, ended, prompt and sequence hashes
    shard-00001....

Ids (and targets) are ``uint16`` when the vocabulary has at most 65,536 tokens,
else ``int32``. Arrays are plain ``.npy`` files (read with ``allow_pickle=False``,
memory-mapped); nothing is pickled. An example's rows run over its trained
token spans in order: row ``i`` describes the distribution at the position
*before* its ``i``-th trained token (the position whose ``targets`` entry is
that token).

Why float16 log-probabilities suffice: float16 keeps 11 significant bits, so a
stored ``log p`` is within ``|log p| · 2⁻¹¹`` of the exact value and ``p`` within a
relative ``|log p| · 2⁻¹¹`` (0.05 % at ``p = e⁻¹``, 0.5 % at ``p = e⁻¹⁰ ≈ 4.5e-5``,
where the term hardly weighs). The sparse-KD loss of a float16 store differs
from a float32 store's by about 1e-4 relative (``tests/methods/test_offline_logits.py``);
bfloat16 (8 bits) would be 8x coarser.

Writes are resumable: rows collect in memory until ``shard_tokens`` of them
are pending, then the shard's arrays are written and ``fsync``-ed under
temporary names and renamed, and its index is renamed into place last: an
index file is the shard's completion mark. Opening a writer on an existing
store deletes the files of any shard without an index (a write cut short) and
skips the examples of the complete ones.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import glob
import hashlib
import json
import os
from typing import Any, Iterable, Sequence

import numpy as np

from jdistill.data.records import DataError
from jdistill.data.tokenize import TokenizedExample, TokenizedSide

FORMAT = "jdistill-topk/1"
SOURCES = ("teacher_forced", "generated")
LOGPROBS_DTYPES = ("float16", "float32")
IDS_KEY, LOGPROBS_KEY = "teacher_topk_ids", "teacher_topk_logprobs"
MANIFEST = "manifest.json"
DEFAULT_SHARD_TOKENS = 1 << 18
_ARRAYS = ("targets", "ids", "logprobs")


def beside(records_path: str) -> str:
    """The default store of a JSONL of generated records: ``data/teacher.jsonl`` → ``data/teacher.topk``."""
    return os.path.splitext(os.fspath(records_path))[0] + ".topk"


def token_hash(ids: Sequence[int]) -> str:
    """A short, stable fingerprint of a token sequence (16 hex digits)."""
    return hashlib.blake2b(np.asarray(ids, "<i4").tobytes(), digest_size=8).hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A fingerprint of a tokenizer's vocabulary (token → id), as :func:`same_vocabulary` compares them."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def ids_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 1 << 16 else "int32"


def _fsync_write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _atomic_json(path: str, value: Any) -> None:
    tmp = f"{path}.tmp"
    _fsync_write(tmp, json.dumps(value, indent=1, ensure_ascii=False).encode("utf-8"))
    os.replace(tmp, path)


def _shard_name(number: int) -> str:
    return f"shard-{number:05d}"


def _committed_shards(directory: str) -> list[str]:
    names = (os.path.basename(p)[: -len(".index.json")] for p in glob.glob(os.path.join(directory, "shard-*.index.json")))
    return sorted(names)


def _directory_bytes(directory: str) -> int:
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(directory, "*")) if os.path.isfile(p))


@dataclasses.dataclass(frozen=True)
class Entry:
    """One example's place in a store.

    Attributes:
      id: the record's id.
      shard: the shard's name.
      offset: its first row in the shard.
      spans: ``[start, end)`` token ranges of the sequence it has rows for, in order.
      ended: the response ended with a stop token (generated) or is whole (teacher-forced).
      prompt_hash: :func:`token_hash` of the tokens before the first span.
      sequence_hash: :func:`token_hash` of the tokens up to the end of the last span.
    """

    id: str
    shard: str
    offset: int
    spans: tuple[tuple[int, int], ...]
    ended: bool
    prompt_hash: str
    sequence_hash: str

    @property
    def num_rows(self) -> int:
        return sum(b - a for a, b in self.spans)

    def to_json(self) -> dict:
        return {"id": self.id, "offset": self.offset, "spans": [list(s) for s in self.spans], "ended": self.ended,
                "prompt": self.prompt_hash, "sequence": self.sequence_hash}

    @classmethod
    def from_json(cls, shard: str, d: dict) -> "Entry":
        return cls(str(d["id"]), shard, int(d["offset"]), tuple((int(a), int(b)) for a, b in d["spans"]),
                   bool(d["ended"]), str(d["prompt"]), str(d["sequence"]))


def _read_index_json(directory: str, shard: str) -> dict:
    with open(os.path.join(directory, f"{shard}.index.json"), encoding="utf-8") as f:
        return json.load(f)


def _read_index(directory: str, shard: str) -> list[Entry]:
    return [Entry.from_json(shard, d) for d in _read_index_json(directory, shard)["examples"]]


def read_manifest(directory: str) -> dict:
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        raise DataError(
            f"{directory!r} is not a teacher top-k store (no {MANIFEST}); write one with "
            "`python -m jdistill.teacher_logits` (teacher-forced on a dataset) or `python -m jdistill.generate` "
            "with generation.num_topk_logprobs=K."
        )
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path} has format {manifest.get('format')!r}; this jdistill reads {FORMAT!r}.")
    return manifest


class TopKWriter:
    """Appends examples' top-k rows to a store, shard by shard; reopening resumes it.

    Args:
      directory: the store (created when missing).
      k: top-k ids per row.
      vocab_size: the tokenizer's size (the sequences' ids lie below it).
      id_limit: the top-k ids lie below it; default ``vocab_size`` (generation takes its
        top-k over the LM head's rows, which may be more). Training checks that the
        stored ids (``max_id``) lie within the student's vocabulary.
      tokenizer: :func:`tokenizer_fingerprint` of the tokenizer the sequences use.
      source: one of :data:`SOURCES`.
      logprobs_dtype: ``'float16'`` (default) or ``'float32'``.
      shard_tokens: rows per shard (a shard is written once this many are pending).
      info: the settings the store is written with (kept in the manifest, shown in errors).
      keep_ids: when given, complete shards holding an id outside it are deleted
        on opening (a caller whose own output lags the store's).

    An existing store must have been written with the same ``k``, vocabulary,
    tokenizer, source and dtype.

    Attributes:
      done_ids: ids of the examples in complete shards.
      discarded: files of incomplete (or discarded) shards deleted on opening.
    """

    def __init__(self, directory: str, *, k: int, vocab_size: int, tokenizer: str, source: str,
                 logprobs_dtype: str = "float16", shard_tokens: int = DEFAULT_SHARD_TOKENS,
                 info: dict | None = None, keep_ids: Iterable[str] | None = None, id_limit: int | None = None):
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if logprobs_dtype not in LOGPROBS_DTYPES:
            raise ValueError(f"logprobs dtype must be one of {LOGPROBS_DTYPES}, got {logprobs_dtype!r}")
        if k < 1 or shard_tokens < 1:
            raise ValueError(f"k ({k}) and shard_tokens ({shard_tokens}) must be >= 1")
        self.directory = os.fspath(directory)
        self.k, self.vocab_size = int(k), int(vocab_size)
        self.id_limit = int(id_limit or vocab_size)
        self.ids_dtype = np.dtype(ids_dtype(max(self.id_limit, self.vocab_size)))
        self.logprobs_dtype = np.dtype(logprobs_dtype)
        self.shard_tokens = int(shard_tokens)
        self.manifest = {
            "format": FORMAT, "source": source, "k": self.k, "vocab_size": self.vocab_size, "tokenizer": tokenizer,
            "ids_dtype": self.ids_dtype.name, "logprobs_dtype": self.logprobs_dtype.name, "info": dict(info or {}),
        }
        os.makedirs(self.directory, exist_ok=True)
        self.discarded: list[str] = []
        if os.path.exists(os.path.join(self.directory, MANIFEST)):
            self._check_compatible(read_manifest(self.directory))
        self._recover(None if keep_ids is None else set(map(str, keep_ids)))
        self._pending: list[tuple[Entry, np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_rows = self._pending_max = 0
        self._pending_ids: set[str] = set()
        self._write_manifest()

    # -- opening -------------------------------------------------------------------------------

    def _check_compatible(self, found: dict) -> None:
        for key in ("source", "k", "vocab_size", "tokenizer", "ids_dtype", "logprobs_dtype"):
            if found.get(key) != self.manifest[key]:
                raise DataError(
                    f"The top-k store {self.directory!r} was written with {key} = {found.get(key)!r}, this run "
                    f"writes {self.manifest[key]!r}; write to another directory or delete it."
                )

    def _recover(self, keep_ids: set[str] | None) -> None:
        committed = set(_committed_shards(self.directory))
        for path in sorted(glob.glob(os.path.join(self.directory, "shard-*"))):
            name = os.path.basename(path).split(".")[0]
            if name not in committed or path.endswith(".tmp"):
                os.remove(path)
                self.discarded.append(os.path.basename(path))
        self.done_ids: set[str] = set()
        self._examples = self._rows = self._max_id = 0
        self._numbers = [int(name.split("-")[1]) for name in committed]
        for shard in sorted(committed):
            ids = [e.id for e in _read_index(self.directory, shard)]
            if keep_ids is not None and not set(ids) <= keep_ids:
                index = os.path.join(self.directory, f"{shard}.index.json")
                os.remove(index)  # uncommit first, then the arrays
                self.discarded.append(os.path.basename(index))
                for array in _ARRAYS:
                    path = os.path.join(self.directory, f"{shard}.{array}.npy")
                    if os.path.exists(path):
                        os.remove(path)
                        self.discarded.append(os.path.basename(path))
                self._numbers.remove(int(shard.split("-")[1]))
                continue
            self.done_ids.update(ids)
            self._examples += len(ids)
            index = _read_index_json(self.directory, shard)
            self._rows += int(index["rows"])
            self._max_id = max(self._max_id, int(index["max_id"]))

    # -- writing -------------------------------------------------------------------------------

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    def add(self, example_id: str, *, sequence: Sequence[int], spans: Sequence[tuple[int, int]],
            ids: np.ndarray, logprobs: np.ndarray, ended: bool = True) -> None:
        """Queues one example: its token ``sequence`` (through its last span), the ``spans`` it has rows
        for, and ``ids`` / ``logprobs`` ``[sum of span lengths, k]``. Written at the next :meth:`commit`."""
        example_id = str(example_id)
        if example_id in self.done_ids or example_id in self._pending_ids:
            raise DataError(f"Example id {example_id!r} is already in the top-k store {self.directory!r}; "
                            "record ids must be unique.")
        sequence = np.asarray(sequence, np.int64)
        spans = tuple((int(a), int(b)) for a, b in spans)
        if not spans or any(not 1 <= a < b for a, b in spans) or spans[-1][1] != len(sequence) or any(
                spans[i][1] > spans[i + 1][0] for i in range(len(spans) - 1)):
            raise ValueError(f"example {example_id!r}: spans {spans} must be ordered, non-empty, start at >= 1 "
                             f"and end at the sequence's end ({len(sequence)})")
        rows = sum(b - a for a, b in spans)
        ids, logprobs = np.asarray(ids), np.asarray(logprobs, np.float32)
        if ids.shape != (rows, self.k) or logprobs.shape != (rows, self.k):
            raise ValueError(f"example {example_id!r}: ids {ids.shape} and logprobs {logprobs.shape} must be "
                             f"({rows}, {self.k})")
        if rows and (ids.min() < 0 or ids.max() >= self.id_limit or sequence.min() < 0
                     or sequence.max() >= max(self.id_limit, self.vocab_size)):
            raise DataError(
                f"Example {example_id!r}: top-k ids up to {int(ids.max())} (or tokens up to {int(sequence.max())}) "
                f"lie outside the {self.id_limit} rows of the teacher's vocabulary."
            )
        if np.isnan(logprobs).any() or (logprobs > 1e-3).any():
            raise DataError(f"Example {example_id!r}: top-k log-probabilities must be <= 0 and not NaN.")
        targets = np.concatenate([sequence[a:b] for a, b in spans])
        entry = Entry(example_id, "", 0, spans, bool(ended), token_hash(sequence[: spans[0][0]]),
                      token_hash(sequence))
        self._pending.append((entry, targets.astype(self.ids_dtype), ids.astype(self.ids_dtype),
                              np.minimum(logprobs, 0.0).astype(self.logprobs_dtype)))
        if rows:
            self._pending_max = max(self._pending_max, int(ids.max()), int(targets.max()))
        self._pending_rows += rows
        self._pending_ids.add(example_id)
        if self._pending_rows >= self.shard_tokens:
            self.commit()

    def commit(self) -> bool:
        """Writes the pending examples as one complete shard; ``False`` when nothing was pending."""
        if not self._pending:
            return False
        number = max(self._numbers, default=-1) + 1
        shard = _shard_name(number)
        entries, offset = [], 0
        for entry, targets, _, _ in self._pending:
            entries.append(dataclasses.replace(entry, shard=shard, offset=offset))
            offset += len(targets)
        arrays = {
            "targets": np.concatenate([p[1] for p in self._pending]),
            "ids": np.concatenate([p[2] for p in self._pending]).reshape(-1, self.k),
            "logprobs": np.concatenate([p[3] for p in self._pending]).reshape(-1, self.k),
        }
        for name, array in arrays.items():
            path = os.path.join(self.directory, f"{shard}.{name}.npy")
            with open(f"{path}.tmp", "wb") as f:
                np.save(f, array, allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(f"{path}.tmp", path)
        _atomic_json(os.path.join(self.directory, f"{shard}.index.json"),
                     {"rows": offset, "max_id": self._pending_max, "examples": [e.to_json() for e in entries]})
        self._max_id = max(self._max_id, self._pending_max)
        self._numbers.append(number)
        self._examples += len(entries)
        self._rows += offset
        self.done_ids.update(self._pending_ids)
        self._pending, self._pending_rows, self._pending_ids, self._pending_max = [], 0, set(), 0
        self._write_manifest()
        return True

    def _write_manifest(self) -> None:
        self.manifest.update(examples=self._examples, tokens=self._rows, shards=len(self._numbers), max_id=self._max_id)
        self.manifest.update(_sizes(self.directory, self._rows, self.k, self.ids_dtype, self.logprobs_dtype))
        _atomic_json(os.path.join(self.directory, MANIFEST), self.manifest)

    def close(self) -> None:
        """Commits what is pending."""
        self.commit()

    def __enter__(self) -> "TopKWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _sizes(directory: str, rows: int, k: int, ids_dt, logprobs_dt) -> dict:
    """Bytes per stored token: the arrays alone, and the whole directory (indexes and headers included)."""
    array_bytes = (k + 1) * np.dtype(ids_dt).itemsize + k * np.dtype(logprobs_dt).itemsize
    return {"bytes_per_token_arrays": array_bytes,
            "bytes_per_token": round(_directory_bytes(directory) / rows, 2) if rows else None}


class TopKStore:
    """A store opened for reading: the index in memory, the arrays memory-mapped on first use.

    Only complete shards are read (those with an index file).
    """

    def __init__(self, directory: str):
        self.directory = os.fspath(directory)
        self.manifest = read_manifest(self.directory)
        self.k = int(self.manifest["k"])
        self.vocab_size = int(self.manifest["vocab_size"])
        self.source = str(self.manifest["source"])
        self.info = dict(self.manifest.get("info", {}))
        self._entries: dict[str, Entry] = {}
        self.max_id = 0
        for shard in _committed_shards(self.directory):
            index = _read_index_json(self.directory, shard)
            self.max_id = max(self.max_id, int(index["max_id"]))
            for d in index["examples"]:
                self._entries[str(d["id"])] = Entry.from_json(shard, d)
        self._arrays: dict[str, dict[str, np.ndarray]] = {}

    def __contains__(self, example_id: str) -> bool:
        return str(example_id) in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def ids(self) -> set[str]:
        """The ids of the stored examples."""
        return set(self._entries)

    def entry(self, example_id: str) -> Entry:
        return self._entries[str(example_id)]

    def _shard(self, shard: str) -> dict[str, np.ndarray]:
        if shard not in self._arrays:
            self._arrays[shard] = {
                name: np.load(os.path.join(self.directory, f"{shard}.{name}.npy"), mmap_mode="r", allow_pickle=False)
                for name in _ARRAYS
            }
        return self._arrays[shard]

    def rows(self, entry: Entry, count: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(targets [n], ids [n, k], logprobs [n, k])`` of the entry's first ``count`` rows (memory-mapped views)."""
        n = entry.num_rows if count is None else int(count)
        arrays = self._shard(entry.shard)
        rows = slice(entry.offset, entry.offset + n)
        return arrays["targets"][rows], arrays["ids"][rows], arrays["logprobs"][rows]

    @property
    def num_tokens(self) -> int:
        return sum(e.num_rows for e in self._entries.values())

    def summary(self) -> str:
        """One line: what the store holds and its bytes per token."""
        m = self.manifest
        return (f"{len(self)} examples, {self.num_tokens} tokens, top-{self.k} {m['ids_dtype']} ids + "
                f"{m['logprobs_dtype']} log-probs ({self.source}): {m.get('bytes_per_token')} bytes per token "
                f"({m.get('bytes_per_token_arrays')} in the arrays)")


def positions_of(spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """The sequence positions whose rows the spans' tokens are: ``t - 1`` predicts token ``t``."""
    return np.concatenate([np.arange(a - 1, b - 1) for a, b in spans]).astype(np.int64)


class TopKExtras(collections.abc.Mapping):
    """``TokenizedExample.extras`` of one example, read from the store when a batch is built.

    ``teacher_topk_ids`` (int32) and ``teacher_topk_logprobs`` (float32) are
    ``[num_positions, k]``: the stored rows at ``positions``, zeros elsewhere.
    Nothing is held in memory between batches but the row range.
    """

    def __init__(self, store: TopKStore, entry: Entry, positions: np.ndarray, num_positions: int):
        self._store, self._entry = store, entry
        self._positions, self._num_positions = positions, int(num_positions)

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in (IDS_KEY, LOGPROBS_KEY):
            raise KeyError(key)
        _, ids, logprobs = self._store.rows(self._entry, len(self._positions))
        dtype, rows = (np.int32, ids) if key == IDS_KEY else (np.float32, logprobs)
        out = np.zeros((self._num_positions, self._store.k), dtype)
        out[self._positions] = rows
        return out

    def __iter__(self):
        return iter((IDS_KEY, LOGPROBS_KEY))

    def __len__(self) -> int:
        return 2


def check_store(store: TopKStore, tokenizer: Any, *, k: int | None = None, what: str = "student") -> None:
    """The store must use ``tokenizer``'s vocabulary (and hold top-``k`` rows when ``k`` is given)."""
    if store.max_id >= len(tokenizer):
        raise DataError(
            f"The top-k store {store.directory!r} holds ids up to {store.max_id}, beyond the {what}'s "
            f"{len(tokenizer)} tokens (the teacher's LM head has more rows than its tokenizer has tokens, and they "
            "took part in its top-k)."
        )
    if store.vocab_size != len(tokenizer) or store.manifest.get("tokenizer") != tokenizer_fingerprint(tokenizer):
        raise DataError(
            f"The top-k store {store.directory!r} was written with another tokenizer ({store.vocab_size} tokens, "
            f"fingerprint {store.manifest.get('tokenizer')}) than the {what}'s ({len(tokenizer)} tokens, "
            f"{tokenizer_fingerprint(tokenizer)}); stored top-k targets need the teacher's tokenizer to be the "
            f"{what}'s. Write the store again with this tokenizer."
        )
    if k is not None and k != store.k:
        raise DataError(
            f"The top-k store {store.directory!r} holds top-{store.k} rows, the config asks for top-{k}; set "
            f"--config.method.teacher_data.num_topk_logprobs={store.k} or write the store again with k={k}."
        )


def with_stored_topk(example: TokenizedExample, store: TopKStore, *, tokenizer: Any, max_len: int,
                     policy: str = "truncate") -> tuple[TokenizedExample | None, str | None]:
    """``example`` with its stored rows as lazy ``extras`` (:class:`TopKExtras`): ``(example, None)``, or
    ``(None, why it is left out)``.

    * ``teacher_forced`` stores: the rows were computed on this exact
      tokenization; its trained spans and tokens must be the stored ones.
    * ``generated`` stores: the response tokens become the teacher's generated
      ids (cut at ``max_len``; an example that does not fit is left out under
      ``policy='drop'``), after checking that the prompt is the one the teacher
      answered and that the ids decode to the record's response text. Only the
      generated turn is trained on.

    Raises:
      DataError: the example's tokenization is not the store's (another data
        setting, template or tokenizer wrote the store).
    """
    entry = store.entry(example.id)
    side = example.student
    if store.source == "teacher_forced":
        spans = tuple(side.trained_spans)
        if entry.spans != spans or entry.sequence_hash != token_hash(side.ids[: spans[-1][1]]):
            raise DataError(
                f"Example {example.id!r} is tokenized differently from when its teacher top-k were stored in "
                f"{store.directory!r} (trained spans {list(spans)} vs stored {list(entry.spans)}, or other tokens). "
                f"The store was written with {store.info}; run the teacher-forced pass again with this run's data "
                "settings (data.max_len, max_prompt_len, truncation, format, prompt_template, the tokenizer)."
            )
        return dataclasses.replace(example, extras=TopKExtras(store, entry, positions_of(spans), len(side.ids))), None
    prompt = [int(t) for t in side.ids[: side.prompt_len]]
    if entry.prompt_hash != token_hash(prompt) and not store.info.get("prompt_differs", False):
        raise DataError(
            f"Record {example.id!r}: the prompt training reads is not the prompt the teacher answered when its top-k "
            f"were stored in {store.directory!r} (the stored targets are conditioned on that prompt). Generate and "
            "train with the same prompt settings: data.prompt_template and max_prompt_len, and the chat template "
            "(generation renders prompt/response records with the tokenizer's chat template unless "
            "data.chat_template='off'; training does not)."
        )
    targets, _, _ = store.rows(entry)
    targets = [int(t) for t in targets]
    text_ids = targets[:-1] if entry.ended else targets
    text = tokenizer.decode(text_ids, skip_special_tokens=True)
    if text != example.response:
        raise DataError(
            f"Record {example.id!r}: its stored response ids decode to {text[:60]!r} with the student's tokenizer, "
            f"not to its response {example.response[:60]!r}: the store {store.directory!r} belongs to other "
            "records or another tokenizer."
        )
    room = max_len - len(prompt)
    if len(targets) > room and policy == "drop":
        return None, "stored response too long (truncation=drop)"
    kept = targets[:room]
    spans = ((len(prompt), len(prompt) + len(kept)),)
    new_side = TokenizedSide(np.asarray(prompt + kept, np.int32), len(prompt))
    extras = TopKExtras(store, entry, positions_of(spans), len(new_side.ids))
    return dataclasses.replace(example, student=new_side, extras=extras), None
