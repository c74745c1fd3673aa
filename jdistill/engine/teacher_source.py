"""Where a run's teacher comes from and whether it learns: one object instead of scattered checks.

A method declares ``teacher_mode`` (:data:`jdistill.methods.base.TEACHER_MODES`)
and whether it needs a teacher at all; :func:`teacher_source` turns that into
one of four sources, which the setup, the train step and the export ask:

* :class:`NoTeacher` — methods that need no teacher in the step: nothing is loaded or run;
* :class:`FrozenTeacher` — the loaded checkpoint under stop-gradient (most methods);
* :class:`TrainedTeacher` — online distillation: the loaded checkpoint's
  parameters join ``state.trainable['teacher']`` with their own optimizer
  group, are checkpointed and exported;
* :class:`EmaTeacher` — self-distillation: no checkpoint; an EMA of the
  student kept in ``state.ema``, updated after every optimizer step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jdistill.methods.base import Method


class TeacherSource:
    """The no-teacher default; the subclasses override what differs."""

    loads_checkpoint = False  # a teacher checkpoint (teacher.path) is loaded
    runs = False  # the step runs a teacher forward
    trained = False  # its parameters are trained (own optimizer group)
    exported = False  # exported beside the student at the end of the run

    def initial(self, student_params, loaded_params) -> tuple[dict, Any]:
        """``(extra trainable groups, ema)`` of the initial train state."""
        del student_params, loaded_params
        return {}, None

    def step_params(self, state, loaded_params):
        """The teacher parameters a step receives as its argument (``None`` when they live in ``trainable``)."""
        del state
        return loaded_params

    def forward_params(self, trainable, step_params):
        """What the teacher forward runs with: gradient only for a trained teacher."""
        del trainable
        return jax.lax.stop_gradient(step_params)

    def updated_ema(self, ema, new_student, keep):
        del new_student, keep
        return ema

    def frozen_base(self, frozen):
        """The frozen base weights the teacher's parameters merge with (a LoRA teacher), else ``None``."""
        return None if not frozen else frozen.get("teacher")

    def final_params(self, state):
        """The teacher's parameters to export (only for :attr:`exported` sources)."""
        raise NotImplementedError(f"{type(self).__name__} has no teacher to export.")

    def graphdef(self, student_graphdef, teacher_graphdef):
        return teacher_graphdef


class NoTeacher(TeacherSource):
    pass


class FrozenTeacher(TeacherSource):
    loads_checkpoint = True
    runs = True


class TrainedTeacher(TeacherSource):
    loads_checkpoint = True
    runs = True
    trained = True
    exported = True

    def initial(self, student_params, loaded_params):
        return {"teacher": loaded_params}, None

    def step_params(self, state, loaded_params):
        del state, loaded_params
        return None

    def forward_params(self, trainable, step_params):
        del step_params
        return trainable["teacher"]

    def final_params(self, state):
        return state.trainable["teacher"]


@dataclasses.dataclass(frozen=True)
class EmaTeacher(TeacherSource):
    decay: float = 0.99
    runs = True
    exported = True

    def initial(self, student_params, loaded_params):
        del loaded_params
        return {}, jax.tree.map(jnp.copy, student_params)

    def step_params(self, state, loaded_params):
        del loaded_params
        return state.ema

    def updated_ema(self, ema, new_student, keep):
        """``d·ema + (1 − d)·student`` leaf by leaf (float32 math, the EMA's dtype); unchanged on a skipped step."""
        return jax.tree.map(keep, ema_update(ema, new_student, self.decay), ema)

    def final_params(self, state):
        return state.ema

    def frozen_base(self, frozen):
        """A LoRA student's EMA is an EMA of its adapters, on the student's frozen base."""
        return None if not frozen else frozen.get("student")

    def graphdef(self, student_graphdef, teacher_graphdef):
        del teacher_graphdef
        return student_graphdef


def ema_update(ema, student, decay: float):
    """``d·ema + (1 − d)·student`` leaf by leaf (in float32, stored in the EMA's dtype)."""

    def update(e, s):
        mixed = decay * e.astype(jnp.float32) + (1.0 - decay) * s.astype(jnp.float32)
        return mixed.astype(e.dtype)

    return jax.tree.map(update, ema, student)


_BY_MODE = {"frozen": FrozenTeacher, "trained": TrainedTeacher}


def teacher_source(method: Method) -> TeacherSource:
    """The teacher source of ``method`` (its ``needs_teacher`` and ``teacher_mode``)."""
    if not method.needs_teacher:
        return NoTeacher()
    if method.teacher_mode == "ema":
        return EmaTeacher(float(method.ema_decay))
    return _BY_MODE[method.teacher_mode]()
