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

Real checkpoints: ``configs/online_kd.py:real`` replaces the demo's paths and
tiny-model settings (learning rate 1e-3, 64-token sequences, 400 steps of 32)
with the values of this config's earlier real-checkpoint command (no paper
script for LLMs): learning rate 2e-5 (teacher 1e-5), 32 sequences per step, 3
epochs, the teacher's master weights in float32 (it is trained: both models'
weights, gradients and AdamW moments are in memory); 512-token sequences with
256-token prompts, an evaluation per epoch. It has no default for the teacher,
the student and the training data: a run that leaves one out stops at once,
naming the flag (``--config.help`` prints every field with its value and
meaning):

    python -m jdistill.main --config=configs/online_kd.py:real \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --workdir=workdirs/online_kd
"""

from jdistill import demo
from jdistill.engine import presets
from jdistill.engine.defaults import base_config


def get_config(arg=None):
    """The demo; with ``arg='real'`` (``--config=configs/online_kd.py:real``) the real-checkpoint preset."""
    config = demo.apply_defaults(base_config("online_kd"))
    config.method.divergence = "forward_kl"
    config.method.kd_rate = 0.5
    config.teacher.param_dtype = "float32"  # trained: float32 master weights
    config.optimizer.teacher_learning_rate = 0.0  # the student's learning rate
    if presets.preset(arg) == "real":
        presets.real_checkpoints(config, learning_rate=2e-5, batch_size=32, epochs=3)
        config.teacher.param_dtype = "float32"  # trained: float32 master weights
        config.optimizer.teacher_learning_rate = 1e-5
    return config
