r"""Online distillation: deep mutual learning of teacher and student (Zhang et al., 2018).

Both models are trained in the same step (``teacher_mode='trained'``: the engine
keeps the teacher's parameters in ``state.trainable['teacher']`` with their own
AdamW group at ``optimizer.teacher_learning_rate``, checkpoints them and exports
the final teacher to ``workdir/teacher_hf``). Each model learns from its own CE
and from the other's soft targets, which are held fixed (stop-gradient) on the
target side:

.. math::

    L_s &= (1 - kd\_rate)\,CE(z_s, y) + kd\_rate\,D\big(\mathrm{sg}(p) \,\|\, q\big) \\
    L_t &= (1 - kd\_rate)\,CE(z_t, y) + kd\_rate\,D\big(\mathrm{sg}(q) \,\|\, p\big) \\
    L &= L_s + L_t

``D`` is any divergence of :mod:`jdistill.losses` at ``temperature``. The
stop-gradients make ``∂L/∂θ_s = ∂L_s/∂θ_s`` and ``∂L/∂θ_t = ∂L_t/∂θ_t``: each
model is pushed towards the other, never the target towards the learner. Both
share one tokenizer. Metrics: ``ce``, ``kd`` (student), ``teacher_ce``,
``teacher_kd``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from jdistill.methods import kd
from jdistill.methods.base import Method, ModelFacts, ModelView
from jdistill.methods.settings import KDSettings


@dataclasses.dataclass(frozen=True)
class TargetModel:
    """A model seen as a distillation *target*: its LM head (and embeddings) under stop-gradient."""

    model: Any

    @property
    def config(self):
        return self.model.config

    def lm_head_weight(self):
        return jax.lax.stop_gradient(self.model.lm_head_weight())

    def embedding_table(self):
        return jax.lax.stop_gradient(self.model.embedding_table())


def as_target(view: ModelView) -> ModelView:
    """``view`` with its outputs and head under stop-gradient, to serve as the other model's teacher."""
    return ModelView(jax.lax.stop_gradient(view.output), TargetModel(view.model))


@dataclasses.dataclass(frozen=True)
class Settings(KDSettings):
    """Deep mutual learning: each model's (1 - kd_rate) CE + kd_rate D(other || self)."""


def make(settings: Settings, facts: ModelFacts = ModelFacts()) -> Method:
    mutual = kd.make(settings, facts)  # (1 - kd_rate) CE(learner) + kd_rate D(target || learner)

    def loss(method_params, batch, student, teacher, ctx):
        del method_params
        student_loss, student_metrics = mutual.loss(None, batch, student, as_target(teacher), ctx)
        teacher_loss, teacher_metrics = mutual.loss(None, batch, teacher, as_target(student), ctx)
        metrics = {**student_metrics, **{f"teacher_{k}": v for k, v in teacher_metrics.items()}}
        return student_loss + teacher_loss, metrics

    return Method(
        name="online_kd", loss=loss, teacher_mode="trained",
        student_call=mutual.student_call, teacher_call=mutual.teacher_call,
    )
