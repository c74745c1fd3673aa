"""Multi-teacher distillation: two frozen teachers, one weight each, combined per token.

``L = (1 - kd_rate) * CE + kd_rate * KD`` with ``KD`` combining the teachers
(``teacher.path`` first, then ``teacher.extra_paths``) as
``method.combination`` says: ``'mixture'`` compares the student with the
weighted mixture of the same-vocabulary teachers' distributions,
``'sum'`` adds the per-teacher divergences with their weights; a teacher with
another tokenizer always contributes its own weighted ULD term (see
``jdistill/methods/multi_teacher.py`` and docs/methods.md). Weights 0.5 / 0.5,
forward KL, temperature 2, kd_rate 0.5 (jdistill's KD settings).

Demo (offline; both demo teachers are trained once on first use and cached):
``demo:teacher`` shares the student's tokenizer A (BPE), ``demo:teacher_b``
uses tokenizer B (WordPiece), so the run tokenizes the data twice and the
second teacher is distilled through ULD:

    python -m jdistill.main --config=configs/multi_teacher.py

Expected on the demo: each teacher's parameter memory and forward FLOPs and
time per step in the log and the report, then the table of teacher vs SFT-only
student vs distilled student on the held-out test split (docs/methods.md has
a measured run).

Real checkpoints: ``configs/multi_teacher.py:real`` replaces the demo's paths
and tiny-model settings (learning rate 1e-3, 64-token sequences, 400 steps of
32) with the values of DSKD's KD scripts (as configs/kd.py): learning rate
5e-4, 32 sequences per step, 20 epochs; 512-token sequences with 256-token
prompts, bfloat16 teachers, an evaluation per epoch. It has no default for the
teachers, the student and the training data: a run that leaves one out stops
at once, naming the flag (``--config.help`` prints every field with its value
and meaning):

    python -m jdistill.main --config=configs/multi_teacher.py:real \
        --config.teacher.path=TEACHER_DIR --config.teacher.extra_paths=SECOND_TEACHER_DIR \
        --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --config.method.weights=0.7,0.3 \
        --workdir=workdirs/multi_teacher
"""

from ml_collections import config_dict

from jdistill import demo
from jdistill.engine import presets
from jdistill.engine.defaults import base_config


def get_config(arg=None):
    """The demo; with ``arg='real'`` (``--config=configs/multi_teacher.py:real``) the real-checkpoint preset."""
    config = demo.apply_defaults(base_config("multi_teacher"))
    config.teacher.extra_paths = "demo:teacher_b"  # tokenizer B: another vocabulary, distilled through ULD
    config.method.weights = "0.5,0.5"
    config.method.combination = "mixture"
    config.method.divergence = "forward_kl"
    config.method.kd_rate = 0.5
    config.method.temperature = 2.0
    if presets.preset(arg) == "real":
        presets.real_checkpoints(config, learning_rate=5e-4, batch_size=32, epochs=20)
        config.teacher.extra_paths = config_dict.placeholder(str)  # the second teacher is required too
    return config
