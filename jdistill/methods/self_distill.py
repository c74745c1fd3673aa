r"""Self-distillation: the student's teacher is (a version of) the student itself.

Two teachers (``method.self_teacher``):

* ``'ema'`` (default): an exponential moving average of the student's own
  parameters (mean teacher; Tarvainen & Valpola, 2017). No teacher model is
  loaded: the engine starts the EMA as a copy of the student, keeps it in the
  train state (``state.ema``; checkpointed, exported to ``workdir/teacher_hf``),
  runs it under stop-gradient, and after every optimizer step sets

  .. math:: \theta_{ema} \leftarrow d\,\theta_{ema} + (1 - d)\,\theta_{student}

  with ``d = method.ema_decay`` (a skipped non-finite step leaves it unchanged).
  At step 0 the teacher equals the student, so the distillation term starts at 0
  and grows as the student moves away from its average.
* ``'checkpoint'``: a frozen earlier checkpoint of the student, given as
  ``teacher.path`` — any Hugging Face directory of the same architecture
  family and tokenizer, e.g. the ``workdir/student_hf`` that a previous run
  exported (``train.export_hf``, on by default). It is loaded like any teacher.

Either way the loss is vanilla KD's (:mod:`jdistill.methods.kd`):
``L = (1 - kd_rate) · CE + kd_rate · D(p_teacher ‖ q_student)``.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from jdistill.engine import console
from jdistill.methods import kd
from jdistill.methods.base import Method

SELF_TEACHERS = ("ema", "checkpoint")


def check_teacher_setting(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Host-side check of ``method.self_teacher`` against ``teacher.path``."""
    del workdir
    if config.method.self_teacher == "checkpoint" and not config.teacher.path:
        raise ValueError(
            "method.self_teacher='checkpoint' needs --config.teacher.path=DIR: an earlier checkpoint of the "
            "student as a Hugging Face directory, e.g. workdirs/<earlier run>/student_hf."
        )
    if config.method.self_teacher == "ema" and config.teacher.path:
        console.info(f"self-distillation: teacher.path {config.teacher.path!r} is not used; the teacher is the "
                     "student's EMA (method.self_teacher='checkpoint' loads it instead)")


def make(config: ml_collections.ConfigDict) -> Method:
    if config.self_teacher not in SELF_TEACHERS:
        raise ValueError(f"method.self_teacher must be one of {SELF_TEACHERS}, got {config.self_teacher!r}.")
    base = dataclasses.replace(kd.make(config), name="self_distill", prepare=check_teacher_setting)
    if config.self_teacher == "checkpoint":
        return base
    return dataclasses.replace(base, teacher_mode="ema", ema_decay=float(config.ema_decay))
