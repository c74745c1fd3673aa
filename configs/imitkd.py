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

Real checkpoints:

    python -m jdistill.main --config=configs/imitkd.py \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --config.optimizer.learning_rate=5e-6 --config.data.max_len=512 --config.data.max_prompt_len=256 \
        --config.on_policy.max_new_tokens=128 --workdir=workdirs/imitkd
"""

from jdistill import demo
from jdistill.engine.defaults import base_config


def get_config():
    config = demo.apply_defaults(base_config("imitkd"))
    config.method.divergence = "forward_kl"
    config.method.student_probability = 0.0
    config.method.student_probability_end = 1.0
    config.on_policy.temperature = 1.0
    config.on_policy.top_p = 1.0
    config.on_policy.max_new_tokens = 24
    return config
