"""Vanilla white-box KD: (1 - kd_rate) * CE + kd_rate * D(teacher || student).

``D`` is any divergence of ``jdistill.losses`` (``--config.method.divergence``:
forward_kl, reverse_kl, js_divergence, generalized_jsd, skew_forward_kl,
skew_reverse_kl, total_variation, adaptive_kl). Teacher and student must share
a tokenizer. Defaults follow DSKD's KD baseline (kd_rate 0.5).

Run:

    python -m jdistill.main --config=configs/kd.py \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --config.method.divergence=skew_forward_kl --workdir=workdirs/kd

Expected: as configs/sft.py, with the KD term logged next to the CE; the
teacher runs inside the jitted step (bf16) and is never checkpointed.
"""

from jdistill.engine.defaults import base_config


def get_config():
    config = base_config()
    config.method.name = "kd"
    config.method.divergence = "forward_kl"
    config.method.kd_rate = 0.5
    config.optimizer.learning_rate = 2e-5
    config.optimizer.warmup_steps = 20
    return config
