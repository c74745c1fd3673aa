"""DistiLLM-2: contrastive distillation (CALD) on batched on-policy data, both curricula on.

At the start of every epoch the teacher and the current student answer every
training prompt with the jitted sampler (temperature 0.8, top-p 0.95; a
progress bar; the generation's share of the epoch's wall time is logged as
``on_policy/generation_share``). Each step of ``train.batch_size`` prompts
trains on the prompts with their teacher responses (skew KL) and with their
student responses (skew reverse KL, stop-gradient student term in the
mixture). β rises from 0.5 to 1 over training (``method.beta_schedule``); the
per-response α curriculum (α0 = ``method.skew_alpha`` 0.1, α_min 0.01) starts
in the second epoch from the reference gaps measured in the first.

Demo (no overrides; 400 steps of 32 prompts, i.e. about 13 epochs of the
demo's 1000 training prompts, so the α curriculum runs from epoch 2 on):

    python -m jdistill.main --config=configs/distillm2.py

Expected on the demo: a generation bar at every epoch start, a line per epoch
with its generation share of wall time (see docs/benchmarks.md), the
reference gaps after the first epoch, then the teacher vs SFT-only vs
DistiLLM-2 student table on the test split.

The paper's ablations: ``--config.method.alpha_curriculum=false`` (no α
curriculum), ``--config.method.beta_schedule=constant`` (β stays at 0.5).

Real checkpoints:

    python -m jdistill.main --config=configs/distillm2.py \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --config.teacher.param_dtype=bfloat16 --config.teacher.compute_dtype=bfloat16 \
        --config.optimizer.learning_rate=5e-6 --config.data.max_len=1024 --config.data.max_prompt_len=512 \
        --config.on_policy.max_new_tokens=512 --config.on_policy.batch_size=256 \
        --config.train.epochs=3 --config.train.steps=0 --workdir=workdirs/distillm2
"""

from jdistill import demo
from jdistill.engine.defaults import base_config


def get_config():
    config = demo.apply_defaults(base_config())
    config.method.name = "distillm2"
    config.method.skew_alpha = 0.1  # alpha0 of the curriculum
    config.method.alpha_min = 0.01
    config.method.alpha_curriculum = True
    config.method.beta_schedule = "linear"
    config.method.beta0 = 0.5
    config.method.beta_end = 1.0
    config.method.cald_reduction = "sequence"
    config.on_policy.temperature = 0.8
    config.on_policy.top_p = 0.95
    config.on_policy.max_new_tokens = 24
    config.on_policy.batch_size = 256
    return config
