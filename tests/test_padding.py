"""Prompt-length buckets, left padding and batch filling (jdistill.padding)."""

import numpy as np
import pytest

from jdistill import padding


def test_pow2_buckets():
    assert [padding.bucket_length(n) for n in (1, 16, 17, 100, 128, 129)] == [16, 16, 32, 128, 128, 256]


def test_explicit_buckets_and_no_bucketing():
    assert padding.bucket_length(10, [64, 16, 32]) == 16
    assert padding.bucket_length(33, (16, 32, 64)) == 64
    assert padding.bucket_length(33, None) == 33
    with pytest.raises(ValueError, match="longer than the largest bucket"):
        padding.bucket_length(65, (16, 32, 64))
    with pytest.raises(ValueError, match="unknown bucket scheme"):
        padding.bucket_length(3, "fibonacci")


def test_left_pad():
    ids, mask = padding.left_pad([[5, 6, 7], [8], []], 4, pad_id=9)
    np.testing.assert_array_equal(ids, [[9, 5, 6, 7], [9, 9, 9, 8], [9, 9, 9, 9]])
    np.testing.assert_array_equal(mask, [[0, 1, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]])
    assert ids.dtype == np.int32 and mask.dtype == bool
    with pytest.raises(ValueError):
        padding.left_pad([[1, 2, 3]], 2)


def test_repad_left_and_fill_batch():
    ids, mask = padding.left_pad([[5, 6], [7]], 2)
    wide_ids, wide_mask = padding.repad_left(ids, mask, 4, pad_id=0)
    np.testing.assert_array_equal(wide_ids, [[0, 0, 5, 6], [0, 0, 0, 7]])
    np.testing.assert_array_equal(wide_mask, [[0, 0, 1, 1], [0, 0, 0, 1]])
    full_ids, full_mask = padding.fill_batch(wide_ids, wide_mask, 4)
    np.testing.assert_array_equal(full_ids[2:], [[0, 0, 5, 6]] * 2)
    np.testing.assert_array_equal(full_mask[2:], [[0, 0, 1, 1]] * 2)
    with pytest.raises(ValueError):
        padding.fill_batch(full_ids, full_mask, 3)
