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

Real checkpoints:

    python -m jdistill.main --config=configs/self_distill.py \
        --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --config.optimizer.learning_rate=2e-5 --config.method.ema_decay=0.999 \
        --config.data.max_len=512 --config.data.max_prompt_len=256 \
        --config.train.epochs=3 --config.train.steps=0 --workdir=workdirs/self_distill
"""

from jdistill import demo
from jdistill.engine.defaults import base_config


def get_config():
    config = demo.apply_defaults(base_config("self_distill"))
    config.method.self_teacher = "ema"
    config.method.ema_decay = 0.99
    config.method.divergence = "forward_kl"
    config.method.kd_rate = 0.5
    config.teacher.path = ""  # the EMA of the student is the teacher
    return config
