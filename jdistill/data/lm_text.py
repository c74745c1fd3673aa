"""Unlabelled text for a language-modelling term beside distillation (DistiLLM's ``lm_coef``).

DistiLLM's and MiniLLM's released recipes add ``lm_coef · CE`` on pre-training
text (OpenWebText for GPT-2) to the distillation loss at every step, so the
student keeps its general language modelling while it imitates the teacher.
This module turns such text into fixed-length windows:

* documents are read from json / jsonl / parquet records with a ``text``
  field (the same reader as the training data) or from ``.txt`` files (one
  document per blank-line-separated paragraph block);
* each document is tokenized with the student's tokenizer (no special tokens)
  and followed by the tokenizer's EOS; the documents are concatenated into one
  token stream, which is cut into non-overlapping windows of ``max_len + 1``
  tokens (input ``w[:-1]``, targets ``w[1:]``, every target in the loss);
  the last partial window is left out and counted;
* the window of row ``i`` at step ``s`` is ``order(epoch)[k mod n]`` with
  ``k = s·B + i``, ``epoch = k // n`` and ``order`` a permutation seeded by
  ``(seed, epoch)``: a pure function of the step, so a resumed run draws
  exactly the windows an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from jdistill.data.records import DataError, load_records

# Batch keys of the language-modelling rows; the train step adds lm_coef times
# their cross-entropy (normalised by the step's global count of their tokens).
LM_KEYS = ("lm_input_ids", "lm_attention_mask", "lm_targets", "lm_loss_mask")


def read_documents(files: Sequence[str] | str) -> list[str]:
    """Documents from ``.txt`` files (blank-line-separated blocks) or records with a ``text`` field."""
    if isinstance(files, str):
        files = [f.strip() for f in files.split(",") if f.strip()]
    files = list(files)
    if not files:
        raise DataError("No language-modelling files given: set --config.data.lm_files=PATH[,PATH...].")
    texts = [f for f in files if f.lower().endswith(".txt")]
    records = [f for f in files if not f.lower().endswith(".txt")]
    documents: list[str] = []
    for path in texts:
        if not os.path.exists(path):
            raise DataError(f"data.lm_files: {path!r} does not exist.")
        with open(path, encoding="utf-8") as f:
            blocks = f.read().split("\n\n")
        documents.extend(block.strip() for block in blocks if block.strip())
    if records:
        for index, record in enumerate(load_records(records)):
            text = record.get("text")
            if not isinstance(text, str):
                raise DataError(
                    f"data.lm_files: record {index} of {records} has no string 'text' field "
                    f"(fields: {sorted(record)}); language-modelling records need {{'text': ...}}."
                )
            if text.strip():
                documents.append(text)
    if not documents:
        raise DataError(f"data.lm_files {files} hold no non-empty document.")
    return documents


@dataclasses.dataclass(frozen=True)
class LMWindows:
    """Fixed-length token windows of unlabelled text and the batches drawn from them.

    Attributes:
      windows: ``[n, max_len + 1]`` int32 token windows.
      batch_size: rows per step (the training batch size).
      seed: seeds the per-epoch window order.
      tokens_left_out: tokens of the last, partial window (reported).
    """

    windows: np.ndarray
    batch_size: int
    seed: int
    tokens_left_out: int

    @classmethod
    def from_documents(cls, documents: Sequence[str], tokenizer, *, max_len: int, batch_size: int,
                       seed: int) -> "LMWindows":
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is None:
            raise DataError("data.lm_files needs a tokenizer with an EOS token to separate documents.")
        stream: list[int] = []
        for document in documents:
            stream.extend(tokenizer(document, add_special_tokens=False)["input_ids"])
            stream.append(int(eos))
        width = max_len + 1
        n = len(stream) // width
        if n == 0:
            raise DataError(
                f"data.lm_files hold {len(stream)} tokens, fewer than one window of data.max_len + 1 = {width}."
            )
        windows = np.asarray(stream[: n * width], np.int32).reshape(n, width)
        return cls(windows, int(batch_size), int(seed), len(stream) - n * width)

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch, 0x4C4D]).permutation(len(self.windows))

    def rows(self, step: int) -> np.ndarray:
        """Window indices of the ``batch_size`` rows of ``step``."""
        n = len(self.windows)
        k = step * self.batch_size + np.arange(self.batch_size)
        orders = {epoch: self._order(epoch) for epoch in np.unique(k // n)}
        return np.asarray([orders[j // n][j % n] for j in k], np.int64)

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """The language-modelling arrays of ``step`` (:data:`LM_KEYS`), ``[B, max_len]`` each."""
        w = self.windows[self.rows(step)]
        ones = np.ones(w[:, :-1].shape, np.float32)
        return {
            "lm_input_ids": w[:, :-1],
            "lm_attention_mask": ones.astype(bool),
            "lm_targets": w[:, 1:],
            "lm_loss_mask": ones,
        }
