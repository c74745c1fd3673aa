"""Logit-standardised KD: z-scored logits, then KD at a base temperature (Sun et al., CVPR 2024).

``L = (1 - kd_rate) * CE + kd_rate * τ² KL(softmax(Z(z_t)/τ) || softmax(Z(z_s)/τ))`` with
``Z(z) = (z - mean z) / (1e-7 + std z)`` over the vocabulary. Defaults follow the
authors' release (``mdistiller/distillers/KD.py``; ``--base-temp 2``, the τ² factor)
and DSKD's kd_rate 0.5 (the release's CE/KD weights 0.1/9 are CIFAR-100 settings).
Teacher and student share a tokenizer.

Demo (offline; the teacher is trained once on first use and cached):

    python -m jdistill.main --config=configs/logit_std_kd.py

Expected on the demo: the same table as configs/kd.py with a logit-standardised KD row.

Real checkpoints: ``configs/logit_std_kd.py:real`` replaces the demo's paths
and tiny-model settings (learning rate 1e-3, 64-token sequences, 400 steps of
32) with the values of DSKD's GPT-2 scripts (as configs/kd.py; the release's
settings are CIFAR-100's): learning rate 5e-4, 32 sequences per step, 20
epochs; 512-token sequences with 256-token prompts, a bfloat16 teacher, an
evaluation per epoch. It has no default for the teacher, the student and the
training data: a run that leaves one out stops at once, naming the flag
(``--config.help`` prints every field with its value and meaning):

    python -m jdistill.main --config=configs/logit_std_kd.py:real \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --workdir=workdirs/logit_std_kd
"""

from jdistill import demo
from jdistill.engine import presets
from jdistill.engine.defaults import base_config


def get_config(arg=None):
    """The demo; with ``arg='real'`` (``--config=configs/logit_std_kd.py:real``) the real-checkpoint preset."""
    config = demo.apply_defaults(base_config("logit_std_kd"))
    config.method.temperature = 2.0  # the release's --base-temp
    config.method.kd_rate = 0.5
    if presets.preset(arg) == "real":
        presets.real_checkpoints(config, learning_rate=5e-4, batch_size=32, epochs=20)
    return config
