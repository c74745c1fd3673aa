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

Real checkpoints: ``configs/gkd.py:real`` replaces the demo's paths and
tiny-model settings (learning rate 1e-3, 64-token sequences, 400 steps of 32)
with the values of this config's earlier real-checkpoint command (the paper
trains T5 models with Adafactor; no script for decoder LLMs): learning rate
5e-6, 32 prompts per step, 3 epochs, student samples of up to 128 tokens;
512-token sequences with 256-token prompts, a bfloat16 teacher, an evaluation
per epoch. It has no default for the teacher, the student and the training
data: a run that leaves one out stops at once, naming the flag
(``--config.help`` prints every field with its value and meaning):

    python -m jdistill.main --config=configs/gkd.py:real \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --workdir=workdirs/gkd
"""

from jdistill import demo
from jdistill.engine import presets
from jdistill.engine.defaults import base_config


def get_config(arg=None):
    """The demo; with ``arg='real'`` (``--config=configs/gkd.py:real``) the real-checkpoint preset."""
    config = demo.apply_defaults(base_config("gkd"))
    config.student.path = "demo:student_sft"  # on-policy methods start from an SFT-warmed student (GKD, DistiLLM-2)
    config.method.divergence = "generalized_jsd"
    config.method.jsd_beta = 0.5
    config.method.student_probability = 0.5
    config.method.seq_kd = False
    config.method.sampling.temperature = 0.9
    config.method.sampling.top_p = 1.0
    config.method.sampling.max_new_tokens = 24
    if presets.preset(arg) == "real":
        presets.real_checkpoints(config, learning_rate=5e-6, batch_size=32, epochs=3)
        config.method.sampling.max_new_tokens = 128
    return config
