"""Exact token alignment (ETA): character-offset spans between different tokenizers, as TRL's GOLD.

On the host, both tokenizations of each response are cut into spans that
cover the same characters (fast-tokenizer offsets). In the step, the
distributions within a span are merged by the chain rule (the last position's
distribution times the probabilities of the span's earlier tokens,
``method.eta_span_merge``); vocabulary entries whose normalised strings exist
in both vocabularies are compared directly by the generalized JSD
(``method.jsd_beta``), the rest by ULD's sorted-probability distance, weighted
by the share of matched teacher entries (GOLD's hybrid loss,
``method.eta_matched_loss``). ``L = (1 - kd_rate) * CE + kd_rate * ETA``;
kd_rate 0.5, temperature 1.0, jsd_beta 0.5 (GOLD's beta). See docs/methods.md.

Demo (offline; the demo's second teacher, tokenizer B / WordPiece, is trained
once on first use and cached; the student uses tokenizer A / BPE):

    python -m jdistill.main --config=configs/eta.py

Expected on the demo: the table of teacher vs SFT-only student vs distilled
student; see docs/results.md for measured figures.

Real checkpoints:

    python -m jdistill.main --config=configs/eta.py \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --config.optimizer.learning_rate=2e-5 --config.teacher.param_dtype=bfloat16 \
        --config.teacher.compute_dtype=bfloat16 --config.data.max_len=512 \
        --config.data.max_prompt_len=256 --config.train.epochs=3 --config.train.steps=0 \
        --workdir=workdirs/eta
"""

from jdistill import demo
from jdistill.engine.defaults import base_config


def get_config():
    config = demo.apply_defaults(base_config("eta"))
    config.teacher.path = "demo:teacher_b"
    config.method.eta_span_merge = "chain_rule"
    config.method.eta_matched_loss = "gold"
    config.method.jsd_beta = 0.5
    config.method.kd_rate = 0.5
    config.method.temperature = 1.0
    return config
