"""Logit-standardised KD: z-scored logits, then KD at a base temperature (Sun et al., CVPR 2024).

``L = (1 - kd_rate) * CE + kd_rate * τ² KL(softmax(Z(z_t)/τ) || softmax(Z(z_s)/τ))`` with
``Z(z) = (z - mean z) / (1e-7 + std z)`` over the vocabulary. Defaults follow the
authors' release (``mdistiller/distillers/KD.py``; ``--base-temp 2``, the τ² factor)
and DSKD's kd_rate 0.5 (the release's CE/KD weights 0.1/9 are CIFAR-100 settings).
Teacher and student share a tokenizer.

Demo (offline; the teacher is trained once on first use and cached):

    python -m jdistill.main --config=configs/logit_std_kd.py

Expected on the demo: the same table as configs/kd.py with a logit-standardised KD row.

Real checkpoints:

    python -m jdistill.main --config=configs/logit_std_kd.py \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --config.optimizer.learning_rate=2e-5 --config.teacher.param_dtype=bfloat16 \
        --config.teacher.compute_dtype=bfloat16 --config.data.max_len=512 \
        --config.data.max_prompt_len=256 --config.train.epochs=3 --config.train.steps=0 \
        --workdir=workdirs/logit_std_kd
"""

from jdistill import demo
from jdistill.engine.defaults import base_config


def get_config():
    config = demo.apply_defaults(base_config("logit_std_kd"))
    config.method.temperature = 2.0  # the release's --base-temp
    config.method.kd_rate = 0.5
    return config
