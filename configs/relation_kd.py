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

Real checkpoints:

    python -m jdistill.main --config=configs/relation_kd.py \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --config.optimizer.learning_rate=2e-5 --config.teacher.param_dtype=bfloat16 \
        --config.teacher.compute_dtype=bfloat16 --config.data.max_len=512 \
        --config.data.max_prompt_len=256 --config.train.epochs=3 --config.train.steps=0 \
        --workdir=workdirs/relation_kd
"""

from jdistill import demo
from jdistill.engine.defaults import base_config


def get_config():
    config = demo.apply_defaults(base_config("relation_kd"))
    config.method.divergence = "forward_kl"
    config.method.kd_rate = 0.5
    config.method.layer_map = "last"
    config.method.token_relation_weight = 1.0
    config.method.sample_relation_weight = 1.0
    config.method.relation_loss = "cosine_mse"
    return config
