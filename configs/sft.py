"""Supervised fine-tuning of the student on gold responses (no teacher): the baseline.

Paper settings (DSKD's ``scripts/gpt2/sft_gpt2_base.sh`` and DistiLLM's
``scripts/gpt2/sft/sft_base.sh``): learning rate 5e-4, cosine decay to 1e-7, no
warmup, weight decay 0.01, gradient clip 1.0, 20 epochs; the weight decay and
the decay-to-zero floor are the base defaults, the demo sets its own learning
rate, steps and warmup.

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
    config = demo.apply_defaults(base_config("sft"))
    return config
