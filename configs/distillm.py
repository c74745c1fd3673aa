"""DistiLLM: skew KL with the adaptive off-policy replay buffer (Ko et al., 2024).

Loss: skew KL ``KL(p ‖ 0.1 p + 0.9 q)`` per response token
(``--config.method.divergence=skew_reverse_kl`` for the skew reverse KL).
Data: each step draws r ~ U(0, 1) (keyed by seed and step); with
``φ_s = φ (1 - progress)``, r < φ_s (or r < φ while the replay buffer is not
full) trains on fresh student samples (temperature 1, top-p 1) and stores them
in the replay buffer (1000 sequences), else r < φ trains on a replay batch,
else on the dataset batch. At every evaluation a validation loss 0.1 above the
previous one raises φ by 0.1; φ starts at ``method.phi_init`` (0, the paper's
GPT-2 setting). The buffer and φ are saved with every checkpoint;
``data_source`` (0 dataset, 1 student samples, 3 replay), ``phi``,
``replay_size`` and ``steps_on_*`` log what each step used.

Demo (no overrides; evaluations every 50 steps drive φ):

    python -m jdistill.main --config=configs/distillm.py

Expected on the demo: training on the dataset until a validation loss rises
(then student samples and replays), then the teacher vs SFT-only vs DistiLLM
student table on the test split.

Real checkpoints:

    python -m jdistill.main --config=configs/distillm.py \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --config.optimizer.learning_rate=5e-6 --config.data.max_len=512 --config.data.max_prompt_len=256 \
        --config.on_policy.max_new_tokens=256 --config.eval.every=500 --workdir=workdirs/distillm
"""

from jdistill import demo
from jdistill.engine.defaults import base_config


def get_config():
    config = demo.apply_defaults(base_config())
    config.method.name = "distillm"
    config.method.divergence = "skew_forward_kl"
    config.method.skew_alpha = 0.1
    config.method.replay_capacity = 1000
    config.method.phi_init = 0.0
    config.method.phi_increment = 0.1
    config.method.phi_trigger = 0.1
    config.on_policy.temperature = 1.0
    config.on_policy.top_p = 1.0
    config.on_policy.max_new_tokens = 24
    config.eval.every = 50
    return config
