"""Watching a run's numbers: skipped steps, a diverging loss, non-finite weights.

A step is *skipped* when its loss or gradient is not finite, or when the
teacher's outputs are not (:func:`jdistill.engine.train_step.teacher_nonfinite_count`):
it consumes its batch and its step number, and changes no parameter.
:class:`RunHealth` sees every step's metrics on the host and

* says why each skipped step was skipped;
* stops the run after ``train.max_bad_steps`` skipped steps in a row, or as
  soon as more than ``train.max_bad_fraction`` of the run's steps were skipped
  (the run could no longer end under that limit);
* warns (once) when the loss, averaged over recent steps, rises far above its
  early value while staying finite: a run diverging slowly.

Its state (the early and recent losses) goes into the checkpoint metadata, so a
resumed run keeps watching from where it was. :func:`nonfinite_params` and
:func:`check_finite_weights` refuse NaN/inf weights: a student loaded with them
(they never become finite again) and a student about to be exported.
"""

from __future__ import annotations

import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jdistill import console
from jdistill.models.param_paths import flatten_with_param_paths

# A loss whose recent mean exceeds EXPLOSION_FACTOR x its early mean is reported.
EXPLOSION_FACTOR = 10.0
# Steps averaged for the early value and for the recent value.
LOSS_WINDOW = 10
TEACHER_HINT = (
    "the teacher's outputs are not finite: check teacher.compute_dtype (bfloat16 overflows: try float32) "
    "and the teacher's weights (teacher.path)"
)
LOSS_HINT = "Lower optimizer.learning_rate, check the data, or use student.compute_dtype=float32."


class NonFiniteLossError(RuntimeError):
    """Too many steps were skipped (non-finite loss, gradient or teacher outputs)."""


class NonFiniteWeightsError(ValueError):
    """A model's weights hold NaN or infinite values."""


@dataclasses.dataclass
class RunHealth:
    """The host-side watch over a run's steps (one per run; see the module docstring)."""

    max_bad_steps: int
    max_bad_fraction: float
    total_steps: int
    early: list = dataclasses.field(default_factory=list)
    recent: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=LOSS_WINDOW))
    warnings: list = dataclasses.field(default_factory=list)
    exploded: bool = False

    @classmethod
    def from_config(cls, train_config, total_steps: int, restored: dict | None = None) -> "RunHealth":
        health = cls(int(train_config.max_bad_steps), float(train_config.max_bad_fraction), int(total_steps))
        if restored:
            health.early = [float(v) for v in restored.get("early", [])]
            health.recent.extend(float(v) for v in restored.get("recent", []))
            health.warnings = list(restored.get("warnings", []))
            health.exploded = bool(restored.get("exploded", False))
        return health

    def state_dict(self) -> dict:
        return {"early": self.early, "recent": list(self.recent), "warnings": self.warnings,
                "exploded": self.exploded}

    @property
    def allowed_bad_steps(self) -> int:
        return int(self.max_bad_fraction * self.total_steps)

    def after_step(self, step: int, metrics: dict, *, bad_in_a_row: int, bad_total: int,
                   bad_teacher_total: int) -> None:
        """Checks step ``step`` (1-based) from its host metrics and the state's skip counters."""
        teacher_ok = bool(metrics.get("teacher_finite", True))
        if not metrics["finite"]:
            why = TEACHER_HINT if not teacher_ok else "non-finite loss or gradient"
            console.info(f"step {step}: skipped ({why})")
        if bad_in_a_row >= self.max_bad_steps:
            what = ("had non-finite teacher outputs" if not teacher_ok
                    else "had a non-finite loss or gradient")
            hint = f"{TEACHER_HINT[0].upper()}{TEACHER_HINT[1:]}." if not teacher_ok else LOSS_HINT
            raise NonFiniteLossError(
                f"{bad_in_a_row} consecutive steps {what} (limit train.max_bad_steps={self.max_bad_steps}), "
                f"up to step {step}. {hint}"
            )
        if bad_total > self.allowed_bad_steps:
            mostly_teacher = 2 * bad_teacher_total >= bad_total
            hint = f"{TEACHER_HINT[0].upper()}{TEACHER_HINT[1:]}." if mostly_teacher else LOSS_HINT
            raise NonFiniteLossError(
                f"{bad_total} of the first {step} steps were skipped ({bad_teacher_total} for non-finite teacher "
                f"outputs, {bad_total - bad_teacher_total} for a non-finite loss or gradient): more than "
                f"train.max_bad_fraction={self.max_bad_fraction:g} of the run's {self.total_steps} steps, so its "
                f"result would not be the one asked for. {hint} If that many skipped steps are expected, raise "
                "train.max_bad_fraction."
            )
        if metrics["finite"]:
            self._watch_loss(step, float(metrics["loss"]))

    def _watch_loss(self, step: int, loss: float) -> None:
        if len(self.early) < LOSS_WINDOW:
            self.early.append(loss)
            return
        self.recent.append(loss)
        if self.exploded or len(self.recent) < LOSS_WINDOW:
            return
        early, recent = float(np.mean(self.early)), float(np.mean(self.recent))
        if recent > EXPLOSION_FACTOR * max(abs(early), 1e-3):
            self.exploded = True
            message = (
                f"step {step}: the loss (mean of the last {LOSS_WINDOW} steps: {recent:.4g}) is "
                f"{recent / max(abs(early), 1e-3):.0f}x its early value ({early:.4g}, the first {LOSS_WINDOW} "
                "steps): training is diverging. Lower optimizer.learning_rate or lengthen the warmup "
                "(optimizer.warmup_steps); the run goes on."
            )
            self.warnings.append(message)
            console.warn(message)


def nonfinite_params(params) -> dict[str, int]:
    """``{parameter path: number of NaN/inf values}`` for every floating leaf of ``params`` that has any."""
    flat = {path: leaf for path, leaf in flatten_with_param_paths(params).items()
            if jnp.issubdtype(getattr(leaf, "dtype", np.float32), jnp.inexact)}
    counts = jax.jit(lambda tree: {k: jnp.sum(~jnp.isfinite(v)) for k, v in tree.items()})(flat)
    host = {k: int(np.asarray(v.addressable_data(0))) for k, v in counts.items()}
    return {k: n for k, n in sorted(host.items()) if n}


def describe(bad: dict[str, int], limit: int = 3) -> str:
    shown = ", ".join(f"{path} ({n} values)" for path, n in list(bad.items())[:limit])
    more = len(bad) - limit
    return shown + (f" and {more} more" if more > 0 else "")


def check_finite_weights(params, what: str, fix: str) -> None:
    """Raises :class:`NonFiniteWeightsError` naming the parameters of ``params`` that hold NaN/inf."""
    bad = nonfinite_params(params)
    if bad:
        raise NonFiniteWeightsError(f"{what} has non-finite weights: {describe(bad)}. {fix}")
