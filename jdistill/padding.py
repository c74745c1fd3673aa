"""Padding helpers: length buckets, left padding, batch filling (numpy only).

The bottom layer of jdistill: it imports nothing from the package, so both
:mod:`jdistill.data` (right-padded training batches) and
:mod:`jdistill.sampling` (left-padded prompt batches) use it.

The decode program is compiled per prompt *shape*; padding every prompt batch
to one of a few bucket lengths bounds the number of compilations. Prompts are
left-padded, so every row's last prompt token sits in the last column and the
generated tokens of all rows are written to the same cache slots.
"""

from collections.abc import Sequence

import numpy as np

# The smallest bucket of the default (power-of-two) scheme.
MIN_POW2_BUCKET = 16


def pow2_bucket(length: int, minimum: int = MIN_POW2_BUCKET) -> int:
    """The smallest power of two ``>= max(length, minimum)``."""
    length = max(int(length), int(minimum), 1)
    return 1 << (length - 1).bit_length()


def bucket_length(length: int, buckets: Sequence[int] | str | None = "pow2") -> int:
    """The padded length a prompt of ``length`` tokens is given.

    Args:
        length: tokens in the longest prompt of a batch.
        buckets: ``"pow2"`` (the next power of two, at least
            :data:`MIN_POW2_BUCKET`), a sequence of allowed lengths (the
            smallest one ``>= length`` is used), or ``None`` (no bucketing).

    Raises:
        ValueError: ``length`` exceeds every bucket, or ``buckets`` is invalid.
    """
    if buckets is None:
        return int(length)
    if isinstance(buckets, str):
        if buckets != "pow2":
            raise ValueError(f"unknown bucket scheme {buckets!r}; use 'pow2', a list or None")
        return pow2_bucket(length)
    fitting = sorted(int(b) for b in buckets if int(b) >= length)
    if not fitting:
        raise ValueError(
            f"a prompt of {length} tokens is longer than the largest bucket "
            f"({max(buckets) if len(buckets) else 'none given'})"
        )
    return fitting[0]


def left_pad(
    sequences: Sequence[Sequence[int]], length: int, pad_id: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Left-pads token sequences into ``[B, length]`` arrays.

    Args:
        sequences: ``B`` lists of token ids, each at most ``length`` long.
        length: output width.
        pad_id: id written into padding slots.

    Returns:
        ``(ids_BxT int32, mask_BxT bool)``; ``mask`` is True on real tokens.
    """
    ids_BxT = np.full((len(sequences), length), pad_id, np.int32)
    mask_BxT = np.zeros((len(sequences), length), bool)
    for row, sequence in enumerate(sequences):
        if len(sequence) > length:
            raise ValueError(f"sequence {row} has {len(sequence)} tokens, more than {length}")
        if len(sequence):
            ids_BxT[row, length - len(sequence):] = sequence
            mask_BxT[row, length - len(sequence):] = True
    return ids_BxT, mask_BxT


def repad_left(
    ids_BxT: np.ndarray, mask_BxT: np.ndarray, length: int, pad_id: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Adds padding columns on the left of a padded batch up to ``length``.

    The rows keep their own padding (left or right); only the width changes.
    """
    extra = length - ids_BxT.shape[1]
    if extra < 0:
        raise ValueError(f"cannot pad {ids_BxT.shape[1]} columns down to {length}")
    if extra == 0:
        return ids_BxT, mask_BxT
    ids_BxT = np.pad(ids_BxT, ((0, 0), (extra, 0)), constant_values=pad_id)
    mask_BxT = np.pad(mask_BxT, ((0, 0), (extra, 0)), constant_values=False)
    return ids_BxT, mask_BxT


def fill_batch(
    ids_BxT: np.ndarray, mask_BxT: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Repeats the first row until the batch has ``batch_size`` rows.

    A fixed batch size keeps the last, partial batch of a dataset on the
    already compiled program; callers drop the filler rows' outputs.
    """
    missing = batch_size - ids_BxT.shape[0]
    if missing < 0:
        raise ValueError(f"batch of {ids_BxT.shape[0]} rows exceeds batch_size {batch_size}")
    if missing == 0 or ids_BxT.shape[0] == 0:
        return ids_BxT, mask_BxT
    ids_BxT = np.concatenate([ids_BxT, np.repeat(ids_BxT[:1], missing, axis=0)])
    mask_BxT = np.concatenate([mask_BxT, np.repeat(mask_BxT[:1], missing, axis=0)])
    return ids_BxT, mask_BxT
