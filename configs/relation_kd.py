"""Relation-based KD: match token-to-token and sample-to-sample similarity structure.

``L = (1 - kd_rate) * CE + kd_rate * D(teacher || student)
      + token_relation_weight * L_token + sample_relation_weight * L_sample``

Relation matrices are built within each model — between the response tokens of
each sequence (``L_token``) and between the sequences' mean-pooled response
representations (``L_sample``) — and the student's are pulled towards the
teacher's, for the mapped layer pairs of ``method.layer_map`` ('last' here: the
final hidden states). ``method.relation_loss`` names the formulation:
'cosine_mse' (squared error of cosine similarities, the default), 'rkd' (Park
et al., CVPR 2019: Huber on mean-normalised distances and on triplet angles,
weighted by ``method.rkd_distance_weight`` / ``method.rkd_angle_weight``) or
'sp' (Tung & Mori, ICCV 2019: row-normalised Gram matrices). No projector: the
hidden sizes may differ. The sample relations are taken within each
micro-batch, so with ``train.grad_accum > 1`` a sequence is compared only with
its own micro-batch. Teacher and student must share a tokenizer. See
docs/methods.md.

Demo (offline; the teacher is trained once on first use and cached):

    python -m jdistill.main --config=configs/relation_kd.py

Expected on the demo: the teacher vs SFT-only vs distilled student table on the
test split, with ``token_relation`` and ``sample_relation`` in the logged
metrics; see docs/results.md for measured figures.

Real checkpoints: ``configs/relation_kd.py:real`` replaces the demo's paths and
tiny-model settings (learning rate 1e-3, 64-token sequences, 400 steps of 32)
with the values of this config's earlier real-checkpoint command (no paper
script for LLMs): learning rate 2e-5, 32 sequences per step, 3 epochs;
512-token sequences with 256-token prompts, a bfloat16 teacher, an evaluation
per epoch. It has no default for the teacher, the student and the training
data: a run that leaves one out stops at once, naming the flag
(``--config.help`` prints every field with its value and meaning):

    python -m jdistill.main --config=configs/relation_kd.py:real \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --workdir=workdirs/relation_kd
"""

from jdistill import demo
from jdistill.engine import presets
from jdistill.engine.defaults import base_config


def get_config(arg=None):
    """The demo; with ``arg='real'`` (``--config=configs/relation_kd.py:real``) the real-checkpoint preset."""
    config = demo.apply_defaults(base_config("relation_kd"))
    config.method.divergence = "forward_kl"
    config.method.kd_rate = 0.5
    config.method.layer_map = "last"
    config.method.token_relation_weight = 1.0
    config.method.sample_relation_weight = 1.0
    config.method.relation_loss = "cosine_mse"
    if presets.preset(arg) == "real":
        presets.real_checkpoints(config, learning_rate=2e-5, batch_size=32, epochs=3)
    return config
