"""The built-in demo: what every config runs with no overrides, offline.

A procedurally generated world with an unlabelled corpus and instruction tasks
whose answers have real entropy, two locally trained tokenizers, a teacher and
a smaller student both pre-trained on the corpus (the teacher then fine-tuned
on its task data), built on first use and cached — all plain Hugging Face
directories read by the same code as real checkpoints. Config
paths of the form ``demo:<name>`` point at them (see :mod:`jdistill.demo.assets`).
"""

from __future__ import annotations

import ml_collections

from jdistill.demo.assets import resolve_name, resolved, uses_demo


def apply_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Points ``config`` at the demo and sets training settings sized for it.

    These settings suit the tiny pre-trained demo models (short sequences, a
    learning rate a third of their pre-training one); a run on real
    checkpoints overrides the paths and, as the configs' docstrings show, the
    learning rate, steps and lengths.
    """
    config.teacher.path = "demo:teacher"
    config.teacher.param_dtype = "float32"
    config.teacher.compute_dtype = "float32"
    config.student.path = "demo:student"
    config.data.train_files = "demo:train"
    config.data.eval_files = "demo:validation"
    config.data.max_len = 64
    config.data.max_prompt_len = 32
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 20
    config.train.steps = 400
    config.train.batch_size = 32
    config.train.checkpoint_every = 200
    config.eval.every = 200
    config.eval.batch_size = 32
    config.eval.max_new_tokens = 24
    config.logging.every = 20
    return config


def resolved_path(value: str) -> str:
    """The local path of a ``demo:<name>`` value (built on first use); other values unchanged."""
    return resolve_name(value[len("demo:"):]) if value.startswith("demo:") else value


__all__ = ["apply_defaults", "resolved", "resolved_path", "uses_demo"]
