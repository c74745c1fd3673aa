"""DSKD, same vocabulary: dual-space KD with trainable student<->teacher projectors.

``L = (1 - kd_rate) * CE + kd_rate * (KD_student_space + CE_t2s + FKL_teacher_space)``
(Zhang et al., 2024). The projectors are method parameters trained at
``optimizer.method_learning_rate`` (1e-3). ``method.divergence`` picks the
student-space divergence (the teacher-space term is forward KL, as in DSKD v1).
Defaults follow the DSKD scripts: kd_rate 0.5, temperature 2.0, forward KL.
``method.projector_init`` picks the projectors' start: 'default' (uniform, DSKD)
or 'pseudo_inverse' (DSKDv2: the t2s projector starts bias-free at
``W_t pinv(W_s)``, so the student head reads out the teacher's logits), e.g.
``--config.method.projector_init=pseudo_inverse``.
Teacher and student must share a tokenizer (a padded teacher head is truncated
to the shared vocabulary); for different tokenizers use configs/dskd_cma.py.

Paper settings (DSKD's released scripts, ``scripts/gpt2/*_gpt2_base.sh``, GPT-2
1.5B -> GPT-2 base on Dolly): learning rate 5e-4, 32 sequences per step,
20 epochs, cosine decay to 1e-7 with no warmup, weight decay 0.01, gradient
clip 1.0, kd_rate 0.5, temperature 2.0 (no τ² factor); this config keeps the
method settings and the optimizer's weight decay and decay-to-zero floor (the
base defaults), while the demo sets its own learning rate, steps and warmup.

Demo (offline; the teacher is trained once on first use and cached):

    python -m jdistill.main --config=configs/dskd.py

Expected on the demo: the same table as configs/kd.py with a DSKD student row;
see docs/results.md for measured figures.

Real checkpoints: ``configs/dskd.py:real`` replaces the demo's paths and
tiny-model settings (learning rate 1e-3, 64-token sequences, 400 steps of 32)
with the values of DSKD's scripts above: learning rate 5e-4, 32 sequences per
step, 20 epochs; 512-token sequences with 256-token prompts, a bfloat16
teacher, an evaluation per epoch. It has no default for the teacher, the
student and the training data: a run that leaves one out stops at once, naming
the flag (``--config.help`` prints every field with its value and meaning):

    python -m jdistill.main --config=configs/dskd.py:real \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --workdir=workdirs/dskd
"""

from jdistill import demo
from jdistill.engine import presets
from jdistill.engine.defaults import base_config


def get_config(arg=None):
    """The demo; with ``arg='real'`` (``--config=configs/dskd.py:real``) the real-checkpoint preset."""
    config = demo.apply_defaults(base_config("dskd"))
    config.method.divergence = "forward_kl"
    config.method.kd_rate = 0.5
    config.method.temperature = 2.0
    config.method.projector_init = "default"
    if presets.preset(arg) == "real":
        presets.real_checkpoints(config, learning_rate=5e-4, batch_size=32, epochs=20)
    return config
