"""GKD: on-policy distillation with the generalized JSD (Agarwal et al., 2024).

Each step, with probability λ = ``method.student_probability`` (0.5) the
step's prompts are answered on the fly by the current student (jitted
sampler, temperature 0.9 as TRL) and the student trains on its own samples;
otherwise on the dataset responses (or, with ``--config.method.seq_kd=true``,
on teacher samples). Loss: generalized JSD with β = ``method.jsd_beta`` (0.5;
0 = forward KL, 1 = reverse KL) per response token. The metric ``data_source``
(0 dataset, 1 student samples, 2 teacher samples) and the ``steps_on_*``
counters say which data each step used.

Demo (no overrides):

    python -m jdistill.main --config=configs/gkd.py

Expected on the demo: training with about half of the steps on student
samples, then the teacher vs SFT-only vs GKD student table on the test split.

Real checkpoints:

    python -m jdistill.main --config=configs/gkd.py \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --config.teacher.param_dtype=bfloat16 --config.teacher.compute_dtype=bfloat16 \
        --config.optimizer.learning_rate=5e-6 --config.data.max_len=512 --config.data.max_prompt_len=256 \
        --config.on_policy.max_new_tokens=128 --workdir=workdirs/gkd
"""

from jdistill import demo
from jdistill.engine.defaults import base_config


def get_config():
    config = demo.apply_defaults(base_config("gkd"))
    config.method.divergence = "generalized_jsd"
    config.method.jsd_beta = 0.5
    config.method.student_probability = 0.5
    config.method.seq_kd = False
    config.on_policy.temperature = 0.9
    config.on_policy.top_p = 1.0
    config.on_policy.max_new_tokens = 24
    return config
