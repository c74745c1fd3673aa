"""Vanilla white-box KD: (1 - kd_rate) * CE + kd_rate * D(teacher || student).

``D`` is any divergence of ``jdistill.losses`` (``--config.method.divergence``:
forward_kl, reverse_kl, js_divergence, generalized_jsd, skew_forward_kl,
skew_reverse_kl, total_variation, adaptive_kl). Teacher and student must share
a tokenizer. Defaults follow DSKD's KD baseline (``scripts/gpt2/vanilla_kd_gpt2_base.sh``:
kd_rate 0.5, temperature 2.0, forward KL).

Paper settings (DSKD's released scripts, ``scripts/gpt2/*_gpt2_base.sh``, GPT-2
1.5B -> GPT-2 base on Dolly): learning rate 5e-4, 32 sequences per step,
20 epochs, cosine decay to 1e-7 with no warmup, weight decay 0.01, gradient
clip 1.0, kd_rate 0.5, temperature 2.0 (no τ² factor); this config keeps the
method settings and the optimizer's weight decay and decay-to-zero floor (the
base defaults), while the demo sets its own learning rate, steps and warmup.

Demo (no overrides: the built-in teacher, student and data, offline; the
teacher is trained once on first use and cached):

    python -m jdistill.main --config=configs/kd.py

Expected on the demo: progress bars for the teacher (first run only), the
SFT-only baseline (first run only) and this KD run, then a table of teacher vs
SFT-only student vs distilled student on the held-out test split (ROUGE-L and
exact match); see docs/demo.md for measured figures.

Real checkpoints:

    python -m jdistill.main --config=configs/kd.py \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --config.optimizer.learning_rate=2e-5 --config.teacher.param_dtype=bfloat16 \
        --config.teacher.compute_dtype=bfloat16 --config.data.max_len=512 \
        --config.data.max_prompt_len=256 --config.train.epochs=3 --config.train.steps=0 \
        --config.method.divergence=skew_forward_kl --workdir=workdirs/kd
"""

from jdistill import demo
from jdistill.engine.defaults import base_config


def get_config():
    config = demo.apply_defaults(base_config("kd"))
    config.method.divergence = "forward_kl"
    config.method.kd_rate = 0.5
    config.method.temperature = 2.0  # DSKD's KD_TEMP
    return config
