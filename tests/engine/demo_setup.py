"""A few steps of the built-in demo (SFT: the demo data and the student's shape, nothing to pre-train or train)."""

from jdistill import demo
from jdistill.engine.defaults import base_config


def demo_config(steps: int):
    config = demo.apply_defaults(base_config("sft"))
    config.teacher.path = ""
    config.student.path = "demo:student_init"
    config.train.steps = steps
    config.train.checkpoint_every = 0
    config.eval.every = 0
    config.eval.max_examples = 16
    config.eval.batch_size = 8
    config.eval.max_new_tokens = 8
    config.logging.progress_bar = False
    config.logging.tensorboard = False
    return demo.resolved(config)
