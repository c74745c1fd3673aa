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

Real checkpoints (attention transfer holds [L, B, H, T, T] attention maps; keep
it off, or the layer map short, for long sequences):

    python -m jdistill.main --config=configs/feature_kd.py \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --config.optimizer.learning_rate=2e-5 --config.teacher.param_dtype=bfloat16 \
        --config.teacher.compute_dtype=bfloat16 --config.data.max_len=512 \
        --config.data.max_prompt_len=256 --config.train.epochs=3 --config.train.steps=0 \
        --config.method.attention_weight=0 \
        --workdir=workdirs/feature_kd
"""

from jdistill import demo
from jdistill.engine.defaults import base_config


def get_config():
    config = demo.apply_defaults(base_config("feature_kd"))
    config.method.divergence = "forward_kl"
    config.method.kd_rate = 0.5
    config.method.layer_map = "uniform"
    config.method.feature_distance = "cosine"
    config.method.feature_weight = 0.1
    config.method.attention_weight = 0.1
    config.method.attention_loss = "kl"
    config.method.attention_heads = "mean"
    return config
