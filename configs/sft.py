"""Supervised fine-tuning of the student on gold responses (no teacher): the baseline.

Demo (no overrides: the built-in demo student and data, offline):

    python -m jdistill.main --config=configs/sft.py

Expected on the demo: a progress bar with loss and tokens/s; ``workdirs/sft``
ends with ``report.md`` (validation CE, ROUGE-L, exact match), ``curves.png``,
``metrics.jsonl``, TensorBoard events, orbax checkpoints and ``student_hf/``;
the closing table scores the teacher and this SFT-only student on the test split.

Real checkpoints (HF directory; Dolly, prompt/response or chat-messages data):

    python -m jdistill.main --config=configs/sft.py \
        --config.student.path=STUDENT_DIR --config.teacher.path= \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --config.optimizer.learning_rate=2e-5 --config.data.max_len=512 \
        --config.data.max_prompt_len=256 --config.train.epochs=3 --config.train.steps=0 \
        --workdir=workdirs/sft
"""

from jdistill import demo
from jdistill.engine.defaults import base_config


def get_config():
    config = demo.apply_defaults(base_config())
    config.method.name = "sft"
    return config
