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

Real checkpoints: ``configs/sft.py:real`` replaces the demo's paths and
tiny-model settings (learning rate 1e-3, 64-token sequences, 400 steps of 32)
with the values of DSKD's and DistiLLM's SFT scripts above: learning rate 5e-4,
32 sequences per step, 20 epochs; 512-token sequences with 256-token prompts,
an evaluation per epoch. It has no default for the student and the training
data: a run that leaves one out stops at once, naming the flag
(``--config.help`` prints every field with its value and meaning):

    python -m jdistill.main --config=configs/sft.py:real \
        --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --workdir=workdirs/sft
"""

from jdistill import demo
from jdistill.engine import presets
from jdistill.engine.defaults import base_config


def get_config(arg=None):
    """The demo; with ``arg='real'`` (``--config=configs/sft.py:real``) the real-checkpoint preset."""
    config = demo.apply_defaults(base_config("sft"))
    if presets.preset(arg) == "real":
        presets.real_checkpoints(config, learning_rate=5e-4, batch_size=32, epochs=20, teacher=False)
    return config
