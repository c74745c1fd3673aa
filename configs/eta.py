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

Real checkpoints: ``configs/eta.py:real`` replaces the demo's paths and
tiny-model settings (learning rate 1e-3, 64-token sequences, 400 steps of 32)
with the values of DSKD's GPT-2 scripts, as the other cross-tokenizer configs
(uld.py, mined.py, dskd_cma.py): learning rate 5e-4, 32 sequences per step, 20
epochs; 512-token sequences with 256-token prompts, a bfloat16 teacher, an
evaluation per epoch. It has no default for the teacher, the student and the
training data: a run that leaves one out stops at once, naming the flag
(``--config.help`` prints every field with its value and meaning):

    python -m jdistill.main --config=configs/eta.py:real \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --workdir=workdirs/eta
"""

from jdistill import demo
from jdistill.engine import presets
from jdistill.engine.defaults import base_config


def get_config(arg=None):
    """The demo; with ``arg='real'`` (``--config=configs/eta.py:real``) the real-checkpoint preset."""
    config = demo.apply_defaults(base_config("eta"))
    config.teacher.path = "demo:teacher_b"
    config.method.eta_span_merge = "chain_rule"
    config.method.eta_matched_loss = "gold"
    config.method.jsd_beta = 0.5
    config.method.kd_rate = 0.5
    config.method.temperature = 1.0
    if presets.preset(arg) == "real":
        presets.real_checkpoints(config, learning_rate=5e-4, batch_size=32, epochs=20)
    return config
