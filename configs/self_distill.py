"""Self-distillation: the teacher is an EMA of the student, or a frozen earlier checkpoint of it.

``L = (1 - kd_rate) * CE + kd_rate * D(teacher || student)``, with the teacher

* ``method.self_teacher='ema'`` (default): the exponential moving average of the
  student's own weights, ``ema <- d * ema + (1 - d) * student`` after every
  optimizer step (``method.ema_decay`` = d). No teacher model is loaded; the EMA
  starts as a copy of the student, is kept and checkpointed in the train state,
  and is exported at the end to ``workdir/teacher_hf``.
* ``method.self_teacher='checkpoint'``: a frozen earlier checkpoint of the
  student, ``teacher.path`` = its Hugging Face directory, e.g. the
  ``student_hf`` that an earlier run exported.

See docs/methods.md.

Demo (offline, no teacher needed):

    python -m jdistill.main --config=configs/self_distill.py

Expected on the demo: the SFT-only vs self-distilled student table on the test
split (no teacher row); see docs/results.md for measured figures.

From an earlier checkpoint of the student (here: an SFT run's export):

    python -m jdistill.main --config=configs/sft.py --workdir=workdirs/sft
    python -m jdistill.main --config=configs/self_distill.py \
        --config.method.self_teacher=checkpoint --config.teacher.path=workdirs/sft/student_hf \
        --workdir=workdirs/self_distill_ckpt

Real checkpoints: ``configs/self_distill.py:real`` replaces the demo's paths
and tiny-model settings (learning rate 1e-3, 64-token sequences, 400 steps of
32) with the values of this config's earlier real-checkpoint command (no paper
script for LLMs): learning rate 2e-5, EMA decay 0.999, 32 sequences per step, 3
epochs; 512-token sequences with 256-token prompts, an evaluation per epoch. It
has no default for the student and the training data: a run that leaves one out
stops at once, naming the flag (``--config.help`` prints every field with its
value and meaning):

    python -m jdistill.main --config=configs/self_distill.py:real \
        --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --workdir=workdirs/self_distill
"""

from jdistill import demo
from jdistill.engine import presets
from jdistill.engine.defaults import base_config


def get_config(arg=None):
    """The demo; with ``arg='real'`` (``--config=configs/self_distill.py:real``) the real-checkpoint preset."""
    config = demo.apply_defaults(base_config("self_distill"))
    config.method.self_teacher = "ema"
    config.method.ema_decay = 0.99
    config.method.divergence = "forward_kl"
    config.method.kd_rate = 0.5
    config.teacher.path = ""  # the EMA of the student is the teacher
    if presets.preset(arg) == "real":
        presets.real_checkpoints(config, learning_rate=2e-5, batch_size=32, epochs=3, teacher=False)
        config.method.ema_decay = 0.999
    return config
