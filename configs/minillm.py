"""MiniLLM: reverse KL by policy gradient on teacher-mixed student samples (Gu et al., 2024).

Every step the step's prompts are answered by sampling each token from
``0.2 · teacher + 0.8 · student`` (importance weights ``q/mix`` per token);
the loss is the release's clipped, importance-weighted policy gradient on
length-normalised, discounted (γ = 0.95) returns of
``r = log p_teacher − log q_student``, plus the exact per-step reverse KL
(single-step decomposition). Metrics: ``pg``, ``single_step_reverse_kl``,
``reward``, ``rollout_weight``.

Demo (no overrides):

    python -m jdistill.main --config=configs/minillm.py

Expected on the demo: training on mixed samples at every step, then the
teacher vs SFT-only vs MiniLLM student table on the test split.

Real checkpoints: ``configs/minillm.py:real`` uses the release's GPT-2 script
values (``minillm/scripts/gpt2/minillm/train_base_xl.sh``): learning rate 5e-6,
512-token sequences with 256-token prompts; 64 prompts per step and 3 epochs.
It has no default for the teacher, the student and the training data:

    python -m jdistill.main --config=configs/minillm.py:real \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --workdir=workdirs/minillm
"""

from jdistill import demo
from jdistill.engine import presets
from jdistill.engine.defaults import base_config


def get_config(arg=None):
    """The demo; with ``arg='real'`` (``--config=configs/minillm.py:real``) the real-checkpoint preset."""
    config = demo.apply_defaults(base_config("minillm"))
    config.student.path = "demo:student_sft"  # on-policy methods start from an SFT-warmed student
    config.method.teacher_mix_alpha = 0.2
    config.method.gamma = 0.95
    config.method.length_norm = True
    config.method.single_step = True
    config.method.sampling.temperature = 1.0
    config.method.sampling.top_p = 1.0
    config.method.sampling.max_new_tokens = 24
    if presets.preset(arg) == "real":
        presets.real_checkpoints(config, learning_rate=5e-6, batch_size=64, epochs=3)
        config.method.sampling.max_new_tokens = 256
    return config
