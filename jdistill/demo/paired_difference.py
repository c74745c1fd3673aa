"""The mean paired difference of two models' per-example scores, with its confidence interval.

The demo scores the SFT-only and the distilled student on the same test
examples, so their difference per example removes the examples' own
difficulty from the comparison: the interval is the Student-t interval of the
mean of ``b - a`` over examples. It measures how sure the comparison is *for
this trained pair of models* on a finite test split; the variation between
training seeds is not in it (``benchmarks/quality.py`` reports that).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from scipy import stats


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """``mean`` of ``b - a`` over ``count`` examples, with its ``confidence`` interval ``[low, high]``."""

    mean: float
    low: float
    high: float
    count: int
    confidence: float

    def describe(self, unit: str = "") -> str:
        """E.g. ``'+3.72 ROUGE-L (95% CI +3.06 to +4.37, 1,200 paired examples)'``."""
        unit = f" {unit}" if unit else ""
        return (f"{self.mean:+.2f}{unit} ({100 * self.confidence:.0f}% CI {self.low:+.2f} to {self.high:+.2f}, "
                f"{self.count:,} paired examples)")


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """The mean of ``b[i] - a[i]`` and its two-sided Student-t ``confidence`` interval.

    Example:
      >>> d = paired_difference([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 5.0, 5.0])
      >>> round(d.mean, 3), round(d.low, 3), round(d.high, 3)
      (1.0, -0.299, 2.299)
    """
    a_N, b_N = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a_N.shape != b_N.shape or a_N.ndim != 1:
        raise ValueError(f"paired scores need two equal-length lists; got shapes {a_N.shape} and {b_N.shape}")
    if a_N.size < 2:
        raise ValueError(f"a confidence interval needs at least 2 paired examples; got {a_N.size}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")
    diff_N = b_N - a_N
    mean = float(diff_N.mean())
    half = float(stats.t.ppf(0.5 + confidence / 2, diff_N.size - 1) * diff_N.std(ddof=1) / np.sqrt(diff_N.size))
    return PairedDifference(mean, mean - half, mean + half, int(diff_N.size), confidence)
