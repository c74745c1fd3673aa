"""DSKD with cross-model attention: dual-space KD between different tokenizers.

Teacher and student tokenize the same text independently; cross-model
attention aligns the two token grids (Zhang et al., 2024). Student-space KD is
applied only where the projected teacher predicts the gold token; the
teacher-space term is forward KL. Projectors (query, t2s, s2t) are method
parameters trained at ``optimizer.method_learning_rate`` (1e-3). Defaults
follow the DSKD scripts: kd_rate 0.5, temperature 2.0, forward KL.

Paper settings (DSKD's released scripts, ``scripts/gpt2/*_gpt2_base.sh``, GPT-2
1.5B -> GPT-2 base on Dolly): learning rate 5e-4, 32 sequences per step,
20 epochs, cosine decay to 1e-7 with no warmup, weight decay 0.01, gradient
clip 1.0, kd_rate 0.5, temperature 2.0 (no τ² factor); this config keeps the
method settings and the optimizer's weight decay and decay-to-zero floor (the
base defaults), while the demo sets its own learning rate, steps and warmup.

Demo (offline; the demo's second teacher, tokenizer B / WordPiece, is trained
once on first use and cached; the student uses tokenizer A / BPE):

    python -m jdistill.main --config=configs/dskd_cma.py

Expected on the demo: the table of teacher vs SFT-only student vs distilled
student; see docs/results.md for measured figures.

Real checkpoints: ``configs/dskd_cma.py:real`` replaces the demo's paths and
tiny-model settings (learning rate 1e-3, 64-token sequences, 400 steps of 32)
with the values of DSKD's scripts above: learning rate 5e-4, 32 sequences per
step, 20 epochs; 512-token sequences with 256-token prompts, a bfloat16
teacher, an evaluation per epoch. It has no default for the teacher, the
student and the training data: a run that leaves one out stops at once, naming
the flag (``--config.help`` prints every field with its value and meaning) (e.g. a Qwen teacher and a GPT-2 student):

    python -m jdistill.main --config=configs/dskd_cma.py:real \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --workdir=workdirs/dskd_cma
"""

from jdistill import demo
from jdistill.engine import presets
from jdistill.engine.defaults import base_config


def get_config(arg=None):
    """The demo; with ``arg='real'`` (``--config=configs/dskd_cma.py:real``) the real-checkpoint preset."""
    config = demo.apply_defaults(base_config("dskd_cma"))
    config.teacher.path = "demo:teacher_b"
    config.method.divergence = "forward_kl"
    config.method.kd_rate = 0.5
    config.method.temperature = 2.0
    if presets.preset(arg) == "real":
        presets.real_checkpoints(config, learning_rate=5e-4, batch_size=32, epochs=20)
    return config
