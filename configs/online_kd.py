"""Online distillation (deep mutual learning): teacher and student trained together.

Each model minimises ``(1 - kd_rate) * CE + kd_rate * D(other || self)`` with the
other's distribution held fixed (stop-gradient on the target side), in the same
step; the total loss is the sum of the two. The teacher's parameters live in the
train state (own AdamW group at ``optimizer.teacher_learning_rate``, 0 = the
student's rate), are checkpointed with the student, and the final teacher is
exported next to the student (``workdir/teacher_hf``, Hugging Face format).
Logged metrics: ``ce``/``kd`` (student) and ``teacher_ce``/``teacher_kd``.
The teacher needs float32 master weights to be trained (teacher.param_dtype).
Teacher and student must share a tokenizer. See docs/methods.md.

Demo (offline; the starting teacher is trained once on first use and cached):

    python -m jdistill.main --config=configs/online_kd.py

Expected on the demo: the teacher (as it was before this run) vs SFT-only vs
distilled student table on the test split; the co-trained teacher is in
``workdirs/online_kd/teacher_hf``. See docs/results.md for measured figures.

Real checkpoints (both models' weights, gradients and AdamW moments in memory):

    python -m jdistill.main --config=configs/online_kd.py \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --config.optimizer.learning_rate=2e-5 --config.optimizer.teacher_learning_rate=1e-5 \
        --config.teacher.compute_dtype=bfloat16 --config.data.max_len=512 \
        --config.data.max_prompt_len=256 --config.train.epochs=3 --config.train.steps=0 \
        --workdir=workdirs/online_kd
"""

from jdistill import demo
from jdistill.engine.defaults import base_config


def get_config():
    config = demo.apply_defaults(base_config("online_kd"))
    config.method.divergence = "forward_kl"
    config.method.kd_rate = 0.5
    config.teacher.param_dtype = "float32"  # trained: float32 master weights
    config.optimizer.teacher_learning_rate = 0.0  # the student's learning rate
    return config
