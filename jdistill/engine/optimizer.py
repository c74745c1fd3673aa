"""AdamW with warmup + cosine decay, gradient clipping and per-group learning rates.

The trainable pytree is ``{'student': <student params>, 'method': <method params>}``
(plus ``'teacher'`` when online distillation trains the teacher); each group
gets its own AdamW and schedule (a method's projectors typically learn at 1e-3
while the student fine-tunes at 1e-5). Weight decay applies to
kernels and embeddings only, never to norms or biases.
"""

from __future__ import annotations

import jax
import ml_collections
import optax

from jdistill.models.param_paths import map_with_param_path

STUDENT, METHOD, TEACHER = "student", "method", "teacher"


def warmup_steps(config: ml_collections.ConfigDict, total_steps: int) -> int:
    """The warmup length: ``warmup_steps``, or ``round(warmup_ratio * total_steps)``; never the whole run."""
    steps, ratio = int(config.warmup_steps), float(config.warmup_ratio)
    if steps < 0 or not 0.0 <= ratio < 1.0:
        raise ValueError(
            f"optimizer.warmup_steps must be >= 0 and optimizer.warmup_ratio in [0, 1); got {steps} and {ratio}."
        )
    if steps and ratio:
        raise ValueError(
            f"Set one of optimizer.warmup_steps ({steps}) and optimizer.warmup_ratio ({ratio}); set the other to 0."
        )
    if ratio:
        steps = int(round(ratio * total_steps))
    return min(steps, max(total_steps - 1, 0))


def schedule(peak: float, config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to ``peak``, then cosine decay to ``min_lr_ratio * peak``."""
    warmup = warmup_steps(config, total_steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup else peak,
        peak_value=peak,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=peak * float(config.min_lr_ratio),
    )


def _decay_mask(params):
    return map_with_param_path(lambda path, _: path.endswith("kernel") or path.endswith("embedding"), params)


def _adamw(learning_rate, config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    return optax.adamw(
        learning_rate,
        b1=float(config.b1),
        b2=float(config.b2),
        eps=float(config.eps),
        weight_decay=float(config.weight_decay),
        mask=_decay_mask,
    )


def make_optimizer(
    config: ml_collections.ConfigDict, total_steps: int, *, train_teacher: bool = False
) -> optax.GradientTransformation:
    """The optimizer over ``{'student': ..., 'method': ...}`` described by ``config`` (``config.optimizer``).

    With ``train_teacher`` the tree also has ``'teacher'``, learning at
    ``teacher_learning_rate`` (0: ``learning_rate``).
    """
    groups = {
        STUDENT: _adamw(schedule(float(config.learning_rate), config, total_steps), config),
        METHOD: _adamw(schedule(float(config.method_learning_rate), config, total_steps), config),
    }
    if train_teacher:
        teacher_lr = float(config.teacher_learning_rate) or float(config.learning_rate)
        groups[TEACHER] = _adamw(schedule(teacher_lr, config, total_steps), config)

    def labels(trainable):
        return {name: jax.tree.map(lambda _, n=name: n, trainable[name]) for name in trainable}

    chain = [optax.multi_transform(groups, labels)]
    if config.grad_clip:
        chain.insert(0, optax.clip_by_global_norm(float(config.grad_clip)))
    return optax.chain(*chain)
