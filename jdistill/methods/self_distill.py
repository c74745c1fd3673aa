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

from jdistill import console
from jdistill.methods import kd
from jdistill.methods.base import Method, ModelFacts
from jdistill.methods.settings import KDSettings, check_range, setting

SELF_TEACHERS = ("ema", "checkpoint")


@dataclasses.dataclass(frozen=True)
class Settings(KDSettings):
    """Vanilla KD from the student's own EMA (or an earlier checkpoint of it)."""

    self_teacher: str = setting("ema", "'ema' (EMA of the student) | 'checkpoint' (teacher.path: an earlier student).")
    ema_decay: float = setting(0.99, "EMA teacher decay d (ema <- d*ema + (1-d)*student).")

    def __post_init__(self):
        super().__post_init__()
        if self.self_teacher not in SELF_TEACHERS:
            raise ValueError(f"method.self_teacher must be one of {SELF_TEACHERS}, got {self.self_teacher!r}.")
        check_range("ema_decay", self.ema_decay, 0.0, 1.0)


def make(settings: Settings, facts: ModelFacts = ModelFacts()) -> Method:
    if settings.self_teacher == "checkpoint" and not facts.teacher_checkpoint:
        raise ValueError(
            "method.self_teacher='checkpoint' needs --config.teacher.path=DIR: an earlier checkpoint of the "
            "student as a Hugging Face directory, e.g. workdirs/<earlier run>/student_hf."
        )
    base = dataclasses.replace(kd.make(settings, facts), name="self_distill")
    if settings.self_teacher == "checkpoint":
        return base
    if facts.teacher_checkpoint:
        console.info("self-distillation: teacher.path is not used; the teacher is the student's EMA "
                     "(method.self_teacher='checkpoint' loads it instead)")
    return dataclasses.replace(base, teacher_mode="ema", ema_decay=float(settings.ema_decay))
