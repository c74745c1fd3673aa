"""ImitKD: distillation on a mix of dataset and student-generated sequences (Lin et al., 2020).

The student is trained towards the teacher's next-token distribution (forward
KL) on sequences drawn from a mixture of the data and its own generations:
each step trains on the current student's samples (temperature 1) with
probability ``p``, rising linearly from ``method.student_probability`` (0) to
``method.student_probability_end`` (1) over training, and on the dataset
responses otherwise. ``data_source`` / ``steps_on_*`` metrics log the mix.

Demo (no overrides):

    python -m jdistill.main --config=configs/imitkd.py

Expected on the demo: more and more steps on student samples as training
goes, then the teacher vs SFT-only vs ImitKD student table on the test split.

Real checkpoints: ``configs/imitkd.py:real`` replaces the demo's paths and
tiny-model settings (learning rate 1e-3, 64-token sequences, 400 steps of 32)
with the values of this config's earlier real-checkpoint command (the paper's
models and optimizer are not LLM-sized): learning rate 5e-6, 32 prompts per
step, 3 epochs, student samples of up to 128 tokens; 512-token sequences with
256-token prompts, a bfloat16 teacher, an evaluation per epoch. It has no
default for the teacher, the student and the training data: a run that leaves
one out stops at once, naming the flag (``--config.help`` prints every field
with its value and meaning):

    python -m jdistill.main --config=configs/imitkd.py:real \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --workdir=workdirs/imitkd
"""

from jdistill import demo
from jdistill.engine import presets
from jdistill.engine.defaults import base_config


def get_config(arg=None):
    """The demo; with ``arg='real'`` (``--config=configs/imitkd.py:real``) the real-checkpoint preset."""
    config = demo.apply_defaults(base_config("imitkd"))
    config.student.path = "demo:student_sft"  # on-policy methods start from an SFT-warmed student (GKD, DistiLLM-2)
    config.method.divergence = "forward_kl"
    config.method.student_probability = 0.0
    config.method.student_probability_end = 1.0
    config.method.sampling.temperature = 1.0
    config.method.sampling.top_p = 1.0
    config.method.sampling.max_new_tokens = 24
    if presets.preset(arg) == "real":
        presets.real_checkpoints(config, learning_rate=5e-6, batch_size=32, epochs=3)
        config.method.sampling.max_new_tokens = 128
    return config
