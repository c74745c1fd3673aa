"""The demo's paired difference and its Student-t interval, against hand-computed values."""

import numpy as np
import pytest

from jdistill.demo.paired_difference import paired_difference


def test_the_interval_is_the_student_t_interval_of_the_mean_difference():
    # Differences 1, 0, 2, 1: mean 1, sample sd sqrt(2/3), t(0.975, 3) = 3.182446305284263.
    d = paired_difference([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 5.0, 5.0])
    half = 3.182446305284263 * np.sqrt(2.0 / 3.0) / 2.0
    assert (d.mean, d.count, d.confidence) == (1.0, 4, 0.95)
    assert d.low == pytest.approx(1.0 - half, abs=1e-12) and d.high == pytest.approx(1.0 + half, abs=1e-12)
    assert d.describe("ROUGE-L") == "+1.00 ROUGE-L (95% CI -0.30 to +2.30, 4 paired examples)"


def test_a_wider_confidence_gives_a_wider_interval_and_identical_scores_give_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    b = a + 0.5 + rng.normal(scale=0.1, size=200)
    narrow, wide = paired_difference(a, b, 0.9), paired_difference(a, b, 0.99)
    assert wide.low < narrow.low < narrow.mean < narrow.high < wide.high
    same = paired_difference(a, a)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("a, b, confidence, match", [
    ([1.0, 2.0], [1.0], 0.95, "equal-length"),
    ([1.0], [2.0], 0.95, "at least 2"),
    ([1.0, 2.0], [2.0, 3.0], 1.0, "confidence"),
])
def test_bad_input_is_refused_with_the_reason(a, b, confidence, match):
    with pytest.raises(ValueError, match=match):
        paired_difference(a, b, confidence)
