"""Offline sparse KD: the teacher's stored top-k log-probs per trained token; no teacher in training.

The teacher runs once, ahead of training, and a top-k store (sharded,
memory-mapped arrays; docs/training.md, "Offline teacher logits") keeps its k
most likely next tokens with their log-probabilities per trained token. The
student then trains with

``L = (1 - kd_rate) * CE + kd_rate * KL_{k+1}(teacher || student)``

where ``KL_{k+1}`` is the forward KL over the k stored tokens plus one bucket for
the remaining mass (the teacher's ``1 - sum exp(top-k)`` vs the student's mass
outside those ids). The teacher is not loaded during training. The teacher's
tokenizer must be the student's. See docs/methods.md.

``method.teacher_data.source`` says on which responses the teacher is run:

* ``'generate'`` (default): its own answers to the training prompts
  (``jdistill.generate`` with ``generation.num_topk_logprobs``, into
  ``workdir/teacher_topk.jsonl`` and its store ``workdir/teacher_topk.topk``,
  resumed on a rerun);
* ``'dataset'``: teacher-forced on the training records' own responses (every
  assistant turn of chat records), into ``workdir/teacher_logits``.

Demo (offline; the teacher is trained once on first use and cached):

    python -m jdistill.main --config=configs/sparse_kd.py

Expected on the demo (the README's first command): a generation progress bar
(tokens/s), then training and the teacher vs SFT-only vs sparse-KD student
table on the 1,200-example test split. Measured on a fresh clone (2-core CPU,
6 min 37 s with every demo asset built): teacher 69.97, SFT-only 58.10,
sparse KD 62.12 ROUGE-L, 34% of the gap, paired difference +4.02 (95% CI
+2.72 to +5.31 over test examples); over 5 seeds +3.72 (+3.06 to +4.37)
(docs/demo.md, docs/results.md).

Two stages on real checkpoints, teacher-forced on your dataset (stage 2 loads
no teacher):

    python -m jdistill.teacher_logits --config=configs/sparse_kd.py \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.method.teacher_data.source=dataset \
        --config.data.max_len=512 --config.data.max_prompt_len=256 --workdir=workdirs/sparse_kd
    python -m jdistill.main --config=configs/sparse_kd.py --config.teacher.path= \
        --config.student.path=STUDENT_DIR --config.data.train_files=train.jsonl \
        --config.data.eval_files=valid.jsonl --config.method.teacher_data.source=dataset \
        --config.data.max_len=512 --config.data.max_prompt_len=256 \
        --config.optimizer.learning_rate=2e-5 --workdir=workdirs/sparse_kd

Targets of the teacher's own responses, written elsewhere (e.g. by a teacher too
large to share a host with the student):

    python -m jdistill.generate --config=configs/generate.py \
        --config.teacher.path=TEACHER_DIR --config.data.prompt_files=train.jsonl \
        --config.generation.num_topk_logprobs=16 --config.generation.temperature=0 \
        --config.output.path=data/teacher_topk.jsonl        # + its store data/teacher_topk.topk
    python -m jdistill.main --config=configs/sparse_kd.py:real \
        --config.teacher.path= --config.data.train_files= \
        --config.method.teacher_data.responses_file=data/teacher_topk.jsonl \
        --config.student.path=STUDENT_DIR --config.data.eval_files=valid.jsonl \
        --workdir=workdirs/sparse_kd

(``teacher.path`` and ``data.train_files`` are empty: the stored targets are
the training data; the settings are the real-checkpoint preset's, below.)

Real checkpoints: ``configs/sparse_kd.py:real`` replaces the demo's paths and
tiny-model settings (learning rate 1e-3, 64-token sequences, 400 steps of 32)
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
