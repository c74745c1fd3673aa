"""Sequence packing: the examples of a batch laid end to end in fewer fixed-length rows.

A right-padded batch of ``B`` examples is ``[B, L]`` with ``L`` the bucket of
its longest example; with lengths spread out (instruction data) most of it is
padding. Packing places the same ``B`` examples into ``R <= B`` rows of the
same length ``L`` by *first-fit decreasing* (longest first, each into the
first row with room), and marks every example with a ``segment_ids`` number
(``1, 2, ...`` within its row; ``0`` on padding). The models attend only
within a segment and restart positions at each segment
(:class:`jdistill.models.Decoder`'s ``segment_ids``), so every token's
logits are those of the unpacked batch, and the losses — sums over response
tokens divided by the global response-token count — are unchanged: the same
examples make up the same optimizer step, only their layout differs.

``R`` is rounded up to a multiple of ``row_multiple`` (gradient accumulation
times the data-parallel shards: every micro-batch must split evenly) and then
to the next of ``row_multiple · {1, 2, 3, 4, 6, 8, 12, ...}`` (at most ``B``),
which bounds the number of shapes the step compiles for.

Only methods whose losses are per-token sums may be packed
(:attr:`jdistill.methods.Method.packable`); cross-vocabulary data (a second
tokenization) is never packed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jdistill.data.records import DataError
from jdistill.data.tokenize import TokenizedExample
from jdistill.padding import bucket_length

# data.packing values: 'auto' packs wherever the method allows it.
PACKING_MODES = ("auto", "on", "off")


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Groups items into bins of at most ``capacity`` tokens: longest first, each into the first bin with room.

    Args:
      lengths: the items' token counts, each ``<= capacity``.
      capacity: the row length.

    Returns:
      The bins, each the list of item indices it holds in increasing order;
      bins in the order they were opened. Deterministic (ties: lower index first).

    Example:
      >>> first_fit_decreasing([5, 3, 4, 2, 6], 8)
      [[3, 4], [0, 1], [2]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = int(lengths[i])
        if n > capacity:
            raise ValueError(f"item {i} has {n} tokens, more than the row length {capacity}")
        for b, free in enumerate(room):
            if n <= free:
                bins[b].append(i)
                room[b] -= n
                break
        else:
            bins.append([i])
            room.append(capacity - n)
    return [sorted(b) for b in bins]


def row_count(needed: int, row_multiple: int, max_rows: int) -> int:
    """Rows given to ``needed`` packed rows: ``row_multiple`` times the next of ``1, 2, 3, 4, 6, 8, 12, ...``.

    Capped at ``max_rows`` (the batch size, itself a multiple of ``row_multiple``).

    Example:
      >>> [row_count(n, 2, 32) for n in (1, 3, 5, 7, 9, 13, 20)]
      [2, 4, 6, 8, 12, 16, 24]
    """
    if needed > max_rows:
        raise ValueError(f"{needed} packed rows exceed the batch's {max_rows} rows")
    units = -(-max(needed, 1) // row_multiple)
    size = 1
    while size < units:
        # 1, 2, 3, 4, 6, 8, 12, 16, ...: powers of two and 1.5 times them (at most a third of rows empty).
        size = size + 1 if size < 2 else (size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3)
    return min(size * row_multiple, max_rows)


def packed_shape(lengths: Sequence[int], *, buckets: Sequence[int], row_multiple: int = 1) -> tuple[int, int]:
    """``(rows, row length)`` of the packed batch of examples of these token counts."""
    length = bucket_length(max(lengths), buckets)
    bins = first_fit_decreasing(lengths, length)
    return row_count(len(bins), row_multiple, len(lengths)), length


def padding_fraction(lengths: Sequence[int], *, batch_size: int, buckets: Sequence[int], packed: bool,
                     row_multiple: int = 1) -> float:
    """Share of the padded slots that are padding over consecutive batches of ``batch_size`` examples.

    The final partial batch is left out (as :class:`~jdistill.data.BatchSource` leaves it out of an epoch).
    """
    tokens = slots = 0
    for start in range(0, len(lengths) - batch_size + 1, batch_size):
        chunk = [int(n) for n in lengths[start : start + batch_size]]
        if packed:
            rows, length = packed_shape(chunk, buckets=buckets, row_multiple=row_multiple)
        else:
            rows, length = len(chunk), bucket_length(max(chunk), buckets)
        tokens += sum(chunk)
        slots += rows * length
    return 1.0 - tokens / slots if slots else 0.0


def collate_packed(
    examples: Sequence[TokenizedExample], *, buckets: Sequence[int], pad_id: int, row_multiple: int = 1, **unused
) -> dict[str, np.ndarray]:
    """A packed batch: the ``[R, L]`` arrays of :func:`jdistill.data.batching.collate` plus ``segment_ids``.

    ``targets`` and ``loss_mask`` are written per example, exactly as unpacked
    (an example's last token predicts nothing, so no target crosses into the
    next segment); ``TokenizedExample.extras`` are packed alongside.
    ``unused`` takes the teacher keyword arguments of ``collate`` (a packed
    batch has no teacher tokenization).
    """
    del unused
    if any(e.teacher is not None for e in examples):
        raise DataError("Examples with a teacher tokenization (cross-vocabulary methods) cannot be packed.")
    lengths = [len(e.student.ids) for e in examples]
    rows, length = packed_shape(lengths, buckets=buckets, row_multiple=row_multiple)
    bins = first_fit_decreasing(lengths, length)
    input_ids = np.full((rows, length), pad_id, np.int32)
    attention_mask = np.zeros((rows, length), bool)
    targets = np.full((rows, length), pad_id, np.int32)
    loss_mask = np.zeros((rows, length), np.float32)
    segment_ids = np.zeros((rows, length), np.int32)
    keys = sorted(examples[0].extras) if examples and examples[0].extras else []
    extras = {}
    for key in keys:
        first = np.asarray(examples[0].extras[key])
        extras[key] = np.zeros((rows, length, *first.shape[1:]), first.dtype)
    for row, members in enumerate(bins):
        offset = 0
        for segment, index in enumerate(members, start=1):
            example = examples[index]
            side = example.student
            n = len(side.ids)
            input_ids[row, offset : offset + n] = side.ids
            attention_mask[row, offset : offset + n] = True
            targets[row, offset : offset + n - 1] = side.ids[1:]
            segment_ids[row, offset : offset + n] = segment
            for start, end in side.trained_spans:
                loss_mask[row, offset + start - 1 : offset + end - 1] = 1.0
            if sorted(example.extras) != keys:
                raise DataError(
                    f"Example {example.id!r} carries extras {sorted(example.extras)}, others {keys}; every "
                    "example of a batch must carry the same per-position arrays."
                )
            for key in keys:
                value = np.asarray(example.extras[key])
                if value.shape[0] != n or value.shape[1:] != extras[key].shape[2:]:
                    raise DataError(
                        f"extras[{key!r}] of example {example.id!r} has shape {value.shape}; expected "
                        f"({n}, *{extras[key].shape[2:]}) (one row per student token)."
                    )
                extras[key][row, offset : offset + n] = value
            offset += n
    return {"input_ids": input_ids, "attention_mask": attention_mask, "targets": targets, "loss_mask": loss_mask,
            "segment_ids": segment_ids, **extras}
