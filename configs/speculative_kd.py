"""Speculative KD: interleaved student/teacher sampling, forward KL (Xu et al., 2024).

Every step the student proposes each response token of the step's prompts;
a proposal outside the teacher's top ``K = method.teacher_top_k`` (25) at
that position is replaced by a teacher sample, both models continuing from
the kept token (one jitted two-model decode). The student trains with
forward KL per response token on those sequences. The step metric
``replaced_fraction`` is the share of tokens the teacher replaced.

Demo (no overrides):

    python -m jdistill.main --config=configs/speculative_kd.py

Expected on the demo: training on interleaved samples at every step
(``replaced_fraction`` logged per step), then the teacher vs SFT-only vs
Speculative KD student table on the test split.

Real checkpoints: ``configs/speculative_kd.py:real`` uses the GKD preset's
values (no decoder-LLM script of the authors was available): learning rate
5e-6, 32 prompts per step, 3 epochs, samples of up to 128 tokens. It has no
default for the teacher, the student and the training data:

    python -m jdistill.main --config=configs/speculative_kd.py:real \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --workdir=workdirs/speculative_kd
"""

from jdistill import demo
from jdistill.engine import presets
from jdistill.engine.defaults import base_config


def get_config(arg=None):
    """The demo; with ``arg='real'`` (``--config=configs/speculative_kd.py:real``) the real-checkpoint preset."""
    config = demo.apply_defaults(base_config("speculative_kd"))
    config.student.path = "demo:student_sft"  # on-policy methods start from an SFT-warmed student
    config.method.divergence = "forward_kl"
    config.method.teacher_top_k = 25
    config.method.student_probability = 1.0
    config.method.sampling.temperature = 1.0
    config.method.sampling.top_p = 1.0
    config.method.sampling.max_new_tokens = 24
    if presets.preset(arg) == "real":
        presets.real_checkpoints(config, learning_rate=5e-6, batch_size=32, epochs=3)
        config.method.sampling.max_new_tokens = 128
    return config
