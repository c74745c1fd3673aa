"""DistiLLM-2: contrastive distillation (CALD) on batched on-policy data, both curricula on.

At the start of every epoch the teacher and the current student answer every
training prompt with the jitted sampler (temperature 0.8, top-p 0.95 as the
release's generation scripts; a progress bar; the generation's share of the
epoch's wall time is logged as ``on_policy/generation_share``). Each step of
``train.batch_size`` prompts trains on the prompts with their teacher
responses (skew KL) and with their student responses (skew reverse KL,
stop-gradient student term in the mixture), weighted as the released trainer
(``src/distillm_trainer.py``): ``(2 - β)·SKL + β·SRKL`` per response,
averaged per sequence. β rises linearly from 1.0 to 1.5 over the first half
of training, then stays there (the release's ``gradual_beta``); the
per-response α curriculum (α0 = ``method.skew_alpha`` 0.1, α_min 0.01,
``clip(1 - (1 - α0) m / (gap + 1e-5))``) starts in the second epoch from the
reference gaps measured in the first.

The authors' Qwen2.5-1.5B recipe (``training_configs/qwen2.5-1.5b-distillm2.yaml``):
learning rate 5e-5, cosine decay with 10% warmup, weight decay 0 (the
Hugging Face default), 1 epoch per round, max length 1024 with 512-token
prompts, LoRA r 16 on all projections; this config uses those optimizer
settings (``warmup_ratio`` 0.1, ``weight_decay`` 0, decay to 0).

Demo (no overrides; from the SFT-warmed demo student, on the demo's unlabelled
pool of 4000 prompts: 400 steps of 32 prompts, about 3.2 epochs, so the α
curriculum runs from epoch 2 on; docs/results.md measures it):

    python -m jdistill.main --config=configs/distillm2.py

Expected on the demo: a generation bar at every epoch start, a line per epoch
with its generation share of wall time (see docs/benchmarks.md), the
reference gaps after the first epoch, then the teacher vs SFT-only vs
DistiLLM-2 student table on the test split.

The paper's ablations: ``--config.method.alpha_curriculum=false`` (no α
curriculum; also what the release effectively runs, since its curriculum
reads its reference gap from the wrong dictionary and stays at α0),
``--config.method.beta_cap=1.0`` (no rising β; the release's default
``gradual_beta = False``).

Real checkpoints: ``configs/distillm2.py:real`` replaces the demo's paths and
tiny-model settings (learning rate 1e-3, 64-token sequences, 400 steps of 32)
with the values of the authors' recipe above: learning rate 5e-5 with 10%
warmup, 64 prompts per step, 1 epoch, 1024-token sequences with 512-token
prompts, student and teacher samples of up to 512 tokens; a bfloat16 teacher,
an evaluation per epoch. It has no default for the teacher, the student and the
training data: a run that leaves one out stops at once, naming the flag
(``--config.help`` prints every field with its value and meaning):

    python -m jdistill.main --config=configs/distillm2.py:real \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --workdir=workdirs/distillm2
"""

from jdistill import demo
from jdistill.engine import presets
from jdistill.engine.defaults import base_config


def get_config(arg=None):
    """The demo; with ``arg='real'`` (``--config=configs/distillm2.py:real``) the real-checkpoint preset."""
    config = demo.apply_defaults(base_config("distillm2"))
    config.student.path = "demo:student_sft"  # on-policy methods start from an SFT-warmed student (GKD, DistiLLM-2)
    config.data.train_files = "demo:prompts"  # the unlabelled prompt pool: DistiLLM-2 trains on prompts only
    config.method.skew_alpha = 0.1  # alpha0 of the curriculum
    config.method.alpha_min = 0.01
    config.method.alpha_curriculum = True
    config.method.beta_start = 1.0  # the release: beta = 1 + 0.5 * min(1, 2 * step / max_steps)
    config.method.beta_cap = 1.5
    config.method.beta_ramp = 0.5
    config.method.cald_reduction = "sequence"
    config.method.sampling.temperature = 0.8
    config.method.sampling.top_p = 0.95
    config.method.sampling.max_new_tokens = 24
    config.method.generation_batch_size = 256
    # The release's optimizer (training_configs/qwen2.5-1.5b-distillm2.yaml): 10% warmup, cosine to 0, no decay.
    config.optimizer.warmup_steps = 0
    config.optimizer.warmup_ratio = 0.1
    config.optimizer.min_lr_ratio = 0.0
    config.optimizer.weight_decay = 0.0
    if presets.preset(arg) == "real":
        presets.real_checkpoints(config, learning_rate=5e-5, batch_size=64, epochs=1, max_len=1024, max_prompt_len=512)
        config.method.sampling.max_new_tokens = 0  # data.max_len - data.max_prompt_len = 512
    return config
