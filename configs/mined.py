"""MinED: minimum-edit-distance token alignment between different tokenizers (FuseLLM; DSKD's baseline).

On the host, the two tokenizations of each example are aligned by dynamic
programming over token-string edit distances, and a teacher→student
vocabulary map (closest token strings) is computed once per tokenizer pair
and cached on disk (``method.vocab_map_dir``). Where a student token aligns
one-to-one with a teacher token, the teacher's distribution is carried into
the student's vocabulary through the map and matched with forward KL at
``temperature``; elsewhere the target is the gold token.
``L = (1 - kd_rate) * CE + kd_rate * KD``. Defaults follow the DSKD scripts:
kd_rate 0.5, temperature 2.0.

Paper settings (DSKD's released scripts, ``scripts/gpt2/*_gpt2_base.sh``, GPT-2
1.5B -> GPT-2 base on Dolly): learning rate 5e-4, 32 sequences per step,
20 epochs, cosine decay to 1e-7 with no warmup, weight decay 0.01, gradient
clip 1.0, kd_rate 0.5, temperature 2.0 (no τ² factor); this config keeps the
method settings and the optimizer's weight decay and decay-to-zero floor (the
base defaults), while the demo sets its own learning rate, steps and warmup.

Demo (offline; the demo's second teacher, tokenizer B / WordPiece, is trained
once on first use and cached; the student uses tokenizer A / BPE):

    python -m jdistill.main --config=configs/mined.py

Expected on the demo: the table of teacher vs SFT-only student vs distilled
student; see docs/results.md for measured figures.

Real checkpoints:

    python -m jdistill.main --config=configs/mined.py \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --config.optimizer.learning_rate=2e-5 --config.teacher.param_dtype=bfloat16 \
        --config.teacher.compute_dtype=bfloat16 --config.data.max_len=512 \
        --config.data.max_prompt_len=256 --config.train.epochs=3 --config.train.steps=0 \
        --workdir=workdirs/mined
"""

from jdistill import demo
from jdistill.engine.defaults import base_config


def get_config():
    config = demo.apply_defaults(base_config("mined"))
    config.teacher.path = "demo:teacher_b"
    config.method.kd_rate = 0.5
    config.method.temperature = 2.0
    return config
