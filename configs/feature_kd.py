"""Feature-based KD: hidden states of mapped layers through learned projectors, plus attention transfer.

``L = (1 - kd_rate) * CE + kd_rate * D(teacher || student)
      + feature_weight * L_feature + attention_weight * L_attention``

``L_feature``: for each mapped layer pair (``method.layer_map``: 'uniform',
'last' or explicit 'S:T,...' hidden-state indices, 0 = embeddings), the
student's hidden state is projected into the teacher's width by a learned
linear projector (a method parameter, trained at
``optimizer.method_learning_rate``) and compared with the frozen teacher's by
``method.feature_distance`` ('cosine', scale-free; 'mse'; or 'fitnets', FitNets'
hint loss ½‖·‖²). ``L_attention`` (``method.attention_loss``): 'kl', the KL
between the teacher's and the student's attention distributions of the blocks
behind the mapped states, heads averaged ('mean') or matched in groups
('mapped') (``method.attention_heads``); or 'minilm', MiniLM's per-head KL of
the last blocks (equal head counts). ``--config.method.attention_weight=0``
turns it off.
Teacher and student must share a tokenizer. See docs/methods.md.

Demo (offline; the teacher is trained once on first use and cached):

    python -m jdistill.main --config=configs/feature_kd.py

Expected on the demo: the teacher vs SFT-only vs distilled student table on the
test split, with ``feature`` and ``attention`` in the logged metrics; see
docs/results.md for measured figures.

Real checkpoints: ``configs/feature_kd.py:real`` replaces the demo's paths and
tiny-model settings (learning rate 1e-3, 64-token sequences, 400 steps of 32)
with the values of this config's earlier real-checkpoint command (no paper
script for LLMs): learning rate 2e-5, 32 sequences per step, 3 epochs,
attention transfer off (``method.attention_weight=0``: it holds [L, B, H, T, T]
attention maps); 512-token sequences with 256-token prompts, a bfloat16
teacher, an evaluation per epoch. It has no default for the teacher, the
student and the training data: a run that leaves one out stops at once, naming
the flag (``--config.help`` prints every field with its value and meaning):

    python -m jdistill.main --config=configs/feature_kd.py:real \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --workdir=workdirs/feature_kd
"""

from jdistill import demo
from jdistill.engine import presets
from jdistill.engine.defaults import base_config


def get_config(arg=None):
    """The demo; with ``arg='real'`` (``--config=configs/feature_kd.py:real``) the real-checkpoint preset."""
    config = demo.apply_defaults(base_config("feature_kd"))
    config.method.divergence = "forward_kl"
    config.method.kd_rate = 0.5
    config.method.layer_map = "uniform"
    config.method.feature_distance = "cosine"
    config.method.feature_weight = 0.1
    config.method.attention_weight = 0.1
    config.method.attention_loss = "kl"
    config.method.attention_heads = "mean"
    if presets.preset(arg) == "real":
        presets.real_checkpoints(config, learning_rate=2e-5, batch_size=32, epochs=3)
        config.method.attention_weight = 0.0  # [L, B, H, T, T] attention maps at 512 tokens: off
    return config
