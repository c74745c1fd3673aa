"""ULD: universal logit distillation between different tokenizers.

The i-th response token of the student is paired with the i-th response token
of the teacher (computed on the host in the data pipeline); the sorted
probability vectors are compared, the shorter vocabulary zero-padded
(Boizard et al., 2024). ``L = (1 - kd_rate) * CE + kd_rate * ULD``.

Paper settings (DSKD's released scripts, ``scripts/gpt2/*_gpt2_base.sh``, GPT-2
1.5B -> GPT-2 base on Dolly): learning rate 5e-4, 32 sequences per step,
20 epochs, cosine decay to 1e-7 with no warmup, weight decay 0.01, gradient
clip 1.0, kd_rate 0.5, no temperature (ULD compares plain softmaxes; ``universal_logit_distillation.py``); this config keeps the
method settings and the optimizer's weight decay and decay-to-zero floor (the
base defaults), while the demo sets its own learning rate, steps and warmup.

Demo (offline; the demo's second teacher, tokenizer B / WordPiece, is trained
once on first use and cached; the student uses tokenizer A / BPE):

    python -m jdistill.main --config=configs/uld.py

Expected on the demo: the table of teacher vs SFT-only student vs distilled
student; see docs/results.md for measured figures.

Real checkpoints: ``configs/uld.py:real`` replaces the demo's paths and
tiny-model settings (learning rate 1e-3, 64-token sequences, 400 steps of 32)
with the values of DSKD's scripts above: learning rate 5e-4, 32 sequences per
step, 20 epochs; 512-token sequences with 256-token prompts, a bfloat16
teacher, an evaluation per epoch. It has no default for the teacher, the
student and the training data: a run that leaves one out stops at once, naming
the flag (``--config.help`` prints every field with its value and meaning):

    python -m jdistill.main --config=configs/uld.py:real \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --workdir=workdirs/uld
"""

from jdistill import demo
from jdistill.engine import presets
from jdistill.engine.defaults import base_config


def get_config(arg=None):
    """The demo; with ``arg='real'`` (``--config=configs/uld.py:real``) the real-checkpoint preset."""
    config = demo.apply_defaults(base_config("uld"))
    config.teacher.path = "demo:teacher_b"
    config.method.kd_rate = 0.5
    config.method.temperature = 1.0
    if presets.preset(arg) == "real":
        presets.real_checkpoints(config, learning_rate=5e-4, batch_size=32, epochs=20)
    return config
