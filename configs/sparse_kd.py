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

Expected on the demo: a generation progress bar (tokens/s), then training and
the teacher vs SFT-only vs sparse-KD student table on the test split.

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
    python -m jdistill.main --config=configs/sparse_kd.py --config.teacher.path= \
        --config.method.teacher_data.responses_file=data/teacher_topk.jsonl \
        --config.student.path=STUDENT_DIR --config.data.eval_files=valid.jsonl \
        --config.optimizer.learning_rate=2e-5 --workdir=workdirs/sparse_kd
"""

from jdistill import demo
from jdistill.engine.defaults import base_config


def get_config():
    config = demo.apply_defaults(base_config("sparse_kd"))
    config.method.kd_rate = 0.5
    config.method.teacher_data.num_topk_logprobs = 16
    config.method.teacher_data.max_new_tokens = 24
    config.method.teacher_data.temperature = 0.0
    return config
