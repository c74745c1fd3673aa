"""Offline sparse KD: the teacher's stored top-k log-probs per response token; no teacher in training.

The teacher answers the training prompts first (``jdistill.generate`` with
``generation.num_topk_logprobs = teacher_data.num_topk_logprobs``; written to
``workdir/teacher_topk.jsonl`` and resumed on a rerun), storing its generated
ids and, per response position, its top-k next tokens with their
log-probabilities. The student then trains on those responses with

``L = (1 - kd_rate) * CE + kd_rate * KL_{k+1}(teacher || student)``

where ``KL_{k+1}`` is the forward KL over the k stored tokens plus one bucket for
the remaining mass (the teacher's ``1 - sum exp(top-k)`` vs the student's mass
outside those ids). The teacher is not loaded during training. The teacher's
tokenizer must be the student's. See docs/methods.md.

Demo (offline; the teacher is trained once on first use and cached):

    python -m jdistill.main --config=configs/sparse_kd.py

Expected on the demo: a generation progress bar (tokens/s), then training and
the teacher vs SFT-only vs sparse-KD student table on the test split.

Targets written elsewhere, e.g. by a teacher too large to share a host with the
student (no teacher model at all in this run):

    python -m jdistill.generate --config=configs/generate.py \
        --config.teacher.path=TEACHER_DIR --config.data.prompt_files=train.jsonl \
        --config.generation.num_topk_logprobs=20 --config.generation.temperature=0 \
        --config.output.path=data/teacher_topk.jsonl
    python -m jdistill.main --config=configs/sparse_kd.py:real \
        --config.teacher.path= --config.data.train_files= \
        --config.method.teacher_data.responses_file=data/teacher_topk.jsonl \
        --config.student.path=STUDENT_DIR --config.data.eval_files=valid.jsonl \
        --workdir=workdirs/sparse_kd

(``teacher.path`` and ``data.train_files`` are empty: the stored targets are
the training data; the settings are the real-checkpoint preset's, below.)

Real checkpoints: ``configs/sparse_kd.py:real`` replaces the demo's paths and
tiny-model settings (learning rate 3e-3, 64-token sequences, 400 steps of 32)
with the values of DSKD's GPT-2 scripts (as configs/kd.py): learning rate 5e-4,
32 sequences per step, 20 epochs, teacher responses of up to 256 tokens;
512-token sequences with 256-token prompts, a bfloat16 teacher, an evaluation
per epoch. It has no default for the teacher, the student and the training
data: a run that leaves one out stops at once, naming the flag
(``--config.help`` prints every field with its value and meaning):

    python -m jdistill.main --config=configs/sparse_kd.py:real \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --workdir=workdirs/sparse_kd
"""

from jdistill import demo
from jdistill.engine import presets
from jdistill.engine.defaults import base_config


def get_config(arg=None):
    """The demo; with ``arg='real'`` (``--config=configs/sparse_kd.py:real``) the real-checkpoint preset."""
    config = demo.apply_defaults(base_config("sparse_kd"))
    config.method.kd_rate = 0.5
    config.method.teacher_data.num_topk_logprobs = 16
    config.method.teacher_data.max_new_tokens = 24
    config.method.teacher_data.temperature = 0.0
    if presets.preset(arg) == "real":
        presets.real_checkpoints(config, learning_rate=5e-4, batch_size=32, epochs=20)
        config.method.teacher_data.max_new_tokens = 256
    return config
