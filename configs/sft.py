"""Supervised fine-tuning of the student on gold responses (no teacher): the baseline.

Run (HF directory of the student, json/jsonl/parquet data with Dolly,
prompt/response or chat-messages records):

    python -m jdistill.main --config=configs/sft.py \
        --config.student.path=STUDENT_DIR --config.data.train_files=train.jsonl \
        --config.data.eval_files=valid.jsonl --workdir=workdirs/sft

Expected: a progress bar with loss and tokens/s; the training CE falls;
``workdirs/sft`` ends with ``report.md`` (validation CE, ROUGE-L and exact
match of greedy responses), ``curves.png``, ``metrics.jsonl``, TensorBoard
events, orbax checkpoints and ``student_hf/`` (loadable by transformers).
"""

from jdistill.engine.defaults import base_config


def get_config():
    config = base_config()
    config.method.name = "sft"
    config.optimizer.learning_rate = 2e-5
    config.optimizer.warmup_steps = 20
    return config
