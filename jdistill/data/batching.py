"""Deterministic, resumable batches of tokenized examples.

* The order of an epoch is a permutation drawn from ``(seed, epoch)`` alone, so
  any batch can be rebuilt from its :class:`DataPosition` (which the checkpoint
  stores): resuming continues with exactly the batches an uninterrupted run
  would have seen.
* Each batch is right-padded to the smallest *bucket* length that holds its
  longest example, which bounds the number of shapes the train step compiles for.
* Arrays (``[B, T]``): ``input_ids``, ``attention_mask``, ``targets`` (the
  next token at each position), ``loss_mask`` (1 where the target is a
  response token, EOS included; every assistant turn of a chat example). With a teacher tokenization the same fields
  exist with a ``teacher_`` prefix, plus the host-side alignments of
  :mod:`jdistill.data.alignment` (``uld_teacher_index``, ``uld_mask``).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np

from jdistill.data import alignment, packing
from jdistill.data.records import DataError
from jdistill.data.tokenize import TokenizedExample, TokenizedSide
from jdistill.padding import bucket_length


@dataclasses.dataclass(frozen=True)
class DataPosition:
    """Where the next batch comes from: ``step_in_epoch`` batches into ``epoch``."""

    epoch: int = 0
    step_in_epoch: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DataPosition":
        return cls(int(d["epoch"]), int(d["step_in_epoch"]))


def default_buckets(max_len: int, smallest: int = 32) -> tuple[int, ...]:
    """Powers of two from ``smallest`` up to ``max_len`` (inclusive of ``max_len``)."""
    sizes, size = [], smallest
    while size < max_len:
        sizes.append(size)
        size *= 2
    sizes.append(max_len)
    return tuple(sizes)


def collate_side(sides: Sequence[TokenizedSide | None], length: int, pad_id: int) -> dict[str, np.ndarray]:
    """Right-padded ``[B, length]`` arrays for one tokenizer; ``None`` rows are empty filler."""
    batch = len(sides)
    input_ids = np.full((batch, length), pad_id, np.int32)
    attention_mask = np.zeros((batch, length), bool)
    targets = np.full((batch, length), pad_id, np.int32)
    loss_mask = np.zeros((batch, length), np.float32)
    for row, side in enumerate(sides):
        if side is None:
            continue
        n = len(side.ids)
        input_ids[row, :n] = side.ids
        attention_mask[row, :n] = True
        targets[row, : n - 1] = side.ids[1:]
        # Position t predicts token t + 1, trained when t + 1 lies in a response span (an assistant turn).
        for start, end in side.trained_spans:
            loss_mask[row, start - 1 : end - 1] = 1.0
    return {"input_ids": input_ids, "attention_mask": attention_mask, "targets": targets, "loss_mask": loss_mask}


def collate(
    examples: Sequence[TokenizedExample | None],
    *,
    buckets: Sequence[int],
    pad_id: int,
    teacher_buckets: Sequence[int] | None = None,
    teacher_pad_id: int | None = None,
) -> dict[str, np.ndarray]:
    """One batch: student arrays, plus ``teacher_*`` arrays when examples carry a teacher side."""
    real = [e for e in examples if e is not None]
    length = bucket_length(max(len(e.student.ids) for e in real), buckets)
    batch = collate_side([e.student if e is not None else None for e in examples], length, pad_id)
    if real and real[0].teacher is not None:
        t_length = bucket_length(max(len(e.teacher.ids) for e in real), teacher_buckets or buckets)
        teacher = collate_side(
            [e.teacher if e is not None else None for e in examples], t_length, teacher_pad_id
        )
        batch.update({f"teacher_{k}": v for k, v in teacher.items()})
        batch.update(alignment.positional_response_alignment(batch["loss_mask"], batch["teacher_loss_mask"]))
    if real and real[0].extras:
        batch.update(collate_extras(examples, length))
    return batch


def collate_extras(examples: Sequence[TokenizedExample | None], length: int) -> dict[str, np.ndarray]:
    """``TokenizedExample.extras`` → zero-padded ``[B, length, ...]`` arrays (``None`` rows stay zero)."""
    real = [e for e in examples if e is not None]
    keys = sorted(real[0].extras)
    out = {}
    for key in keys:
        first = np.asarray(real[0].extras[key])
        array = np.zeros((len(examples), length, *first.shape[1:]), first.dtype)
        for row, example in enumerate(examples):
            if example is None:
                continue
            if sorted(example.extras) != keys:
                raise DataError(
                    f"Example {example.id!r} carries extras {sorted(example.extras)}, others {keys}; every "
                    "example of a batch must carry the same per-position arrays."
                )
            value = np.asarray(example.extras[key])
            if value.shape[0] != len(example.student.ids) or value.shape[1:] != first.shape[1:]:
                raise DataError(
                    f"extras[{key!r}] of example {example.id!r} has shape {value.shape}; expected "
                    f"({len(example.student.ids)}, *{first.shape[1:]}) (one row per student token)."
                )
            array[row, : value.shape[0]] = value
        out[key] = array
    return out


class BatchSource:
    """Shuffled, bucketed global batches of a fixed number of examples.

    With ``packed=True`` each batch's examples are packed into fewer rows
    (:func:`jdistill.data.packing.collate_packed`, a multiple of
    ``row_multiple`` of them) with ``segment_ids``; which examples make up a
    step is the same either way.

    The final partial batch of an epoch is not used in that epoch (its examples
    come up in other epochs' permutations); ``examples_unused_per_epoch`` says
    how many, and the run log reports it.
    """

    def __init__(
        self,
        examples: Sequence[TokenizedExample],
        *,
        batch_size: int,
        seed: int,
        buckets: Sequence[int],
        pad_id: int,
        teacher_buckets: Sequence[int] | None = None,
        teacher_pad_id: int | None = None,
        shuffle: bool = True,
        packed: bool = False,
        row_multiple: int = 1,
    ):
        if len(examples) < batch_size:
            raise DataError(
                f"Only {len(examples)} usable training examples for a batch of {batch_size}; "
                "lower --config.train.batch_size or add data."
            )
        self.examples = list(examples)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.packed = packed
        self.row_multiple = row_multiple
        self._collate_kwargs = dict(
            buckets=tuple(buckets), pad_id=pad_id, teacher_buckets=teacher_buckets, teacher_pad_id=teacher_pad_id
        )

    @property
    def steps_per_epoch(self) -> int:
        return len(self.examples) // self.batch_size

    @property
    def examples_unused_per_epoch(self) -> int:
        return len(self.examples) - self.steps_per_epoch * self.batch_size

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.examples))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))

    def batch_at(self, position: DataPosition) -> dict[str, np.ndarray]:
        order = self.order(position.epoch)
        start = position.step_in_epoch * self.batch_size
        rows = order[start : start + self.batch_size]
        examples = [self.examples[i] for i in rows]
        if self.packed:
            return packing.collate_packed(examples, row_multiple=self.row_multiple, **self._collate_kwargs)
        return collate(examples, **self._collate_kwargs)

    def padding_fraction(self, epoch: int = 0, *, packed: bool | None = None) -> float:
        """Share of padding in the batches of ``epoch`` (packed as this source packs, unless ``packed`` says)."""
        order = self.order(epoch)[: self.steps_per_epoch * self.batch_size]
        return packing.padding_fraction(
            [len(self.examples[i].student.ids) for i in order], batch_size=self.batch_size,
            buckets=self._collate_kwargs["buckets"], packed=self.packed if packed is None else packed,
            row_multiple=self.row_multiple,
        )

    def advance(self, position: DataPosition) -> DataPosition:
        step = position.step_in_epoch + 1
        if step >= self.steps_per_epoch:
            return DataPosition(position.epoch + 1, 0)
        return DataPosition(position.epoch, step)

    def iterate(self, start: DataPosition) -> Iterator[tuple[DataPosition, dict[str, np.ndarray]]]:
        """Yields ``(position of the batch, batch)`` forever from ``start``."""
        position = start
        while True:
            yield position, self.batch_at(position)
            position = self.advance(position)


def fixed_size_batches(
    examples: Sequence[TokenizedExample], *, batch_size: int, **collate_kwargs
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Every example once, in order; the last batch is filled with empty rows.

    Yields ``(number of real rows, batch)``. Used for evaluation, where no
    example may be left out and batch shapes must stay fixed.
    """
    for start in range(0, len(examples), batch_size):
        chunk: list = list(examples[start : start + batch_size])
        real = len(chunk)
        chunk += [None] * (batch_size - real)
        yield real, collate(chunk, **collate_kwargs)
