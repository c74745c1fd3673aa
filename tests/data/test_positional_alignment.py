"""ULD's positional pairing of response tokens, computed on the host."""

import numpy as np

from jdistill.data import alignment, collate
from jdistill.data.tokenize import TokenizedExample, TokenizedSide


def test_pairs_by_response_rank():
    student = np.array([[0, 1, 1, 1, 0, 0], [0, 0, 1, 0, 0, 0]], np.float32)
    teacher = np.array([[0, 0, 1, 1, 0], [1, 1, 1, 0, 0]], np.float32)
    out = alignment.positional_response_alignment(student, teacher)
    np.testing.assert_array_equal(out["uld_mask"], [[0, 1, 1, 0, 0, 0], [0, 0, 1, 0, 0, 0]])
    np.testing.assert_array_equal(out["uld_teacher_index"][0, 1:3], [2, 3])
    assert out["uld_teacher_index"][1, 2] == 0


def test_empty_response_pairs_nothing():
    student = np.zeros((1, 4), np.float32)
    teacher = np.array([[0, 1, 1, 0]], np.float32)
    out = alignment.positional_response_alignment(student, teacher)
    assert out["uld_mask"].sum() == 0


def test_collate_adds_the_alignment_with_a_teacher_side():
    example = TokenizedExample(
        "a", TokenizedSide(np.array([1, 5, 6, 7, 2], np.int32), 2), TokenizedSide(np.array([5, 6, 8, 9, 7, 1]), 2)
    )
    batch = collate([example, None], buckets=(8,), pad_id=0, teacher_buckets=(8,), teacher_pad_id=0)
    # Student response targets at positions 1..3 (6, 7, EOS); teacher at 1..4.
    np.testing.assert_array_equal(batch["uld_mask"][0], [0, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(batch["uld_teacher_index"][0, 1:4], [1, 2, 3])
    assert batch["uld_mask"][1].sum() == 0
    no_teacher = collate([TokenizedExample("b", example.student)], buckets=(8,), pad_id=0)
    assert "uld_mask" not in no_teacher
