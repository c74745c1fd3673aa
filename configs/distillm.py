"""DistiLLM: skew KL with the adaptive off-policy replay buffer (Ko et al., 2024).

Loss: skew KL ``KL(p ‖ 0.1 p + 0.9 q)`` per response token, no gold CE (the
release's ``--kd-ratio 1.0``; ``--config.method.divergence=skew_reverse_kl``
for the skew reverse KL). Data: each step draws r ~ U(0, 1) (keyed by seed
and step); with ``φ_s = φ (1 - t / T)``, r < φ_s (or r < φ while the replay
buffer is not full) trains on fresh student samples (temperature 1, top-p 1)
and stores them in the replay buffer (1000 sequences), else r < φ trains on a
replay batch, else on the dataset batch. φ follows the release's rule
(``finetune.py``): the student's CE on the gold validation responses is
measured before the first step and once per epoch (``eval.every = -1``);
when it is 0.1 above the reference, φ rises by 0.1 and the reference becomes
the current CE, otherwise the reference stays. φ starts at
``method.phi_init`` (0, the paper's GPT-2 setting). The buffer, φ and the
reference are saved with every checkpoint; ``data_source`` (0 dataset,
1 student samples, 3 replay), ``phi``, ``replay_size`` and ``steps_on_*``
log what each step used.

Paper settings (``scripts/gpt2/distillm/train_0.1B_1.5B.sh``): learning rate
5e-4, batch 8 x 16 GPUs, 20 epochs, cosine decay to 1e-7 with no warmup,
weight decay 0.01, gradient clip 1.0, and a language-modelling term
``lm_coef · CE`` (lm_coef 1) on OpenWebText windows of 512 tokens: give it
with ``--config.data.lm_files=corpus.txt`` (``--config.data.lm_coef``).

Demo (no overrides; an evaluation per epoch drives φ):

    python -m jdistill.main --config=configs/distillm.py

Expected on the demo: training on the dataset until a validation loss rises
(then student samples and replays), then the teacher vs SFT-only vs DistiLLM
student table on the test split.

Real checkpoints: ``configs/distillm.py:real`` replaces the demo's paths and
tiny-model settings (learning rate 1e-3, 64-token sequences, 400 steps of 32)
with the values of the script above: learning rate 5e-4, 128 sequences per step
(8 x 16 GPUs), 20 epochs, student samples of up to 256 tokens; 512-token
sequences with 256-token prompts, a bfloat16 teacher, an evaluation per epoch.
It has no default for the teacher, the student and the training data: a run
that leaves one out stops at once, naming the flag (``--config.help`` prints
every field with its value and meaning):

    python -m jdistill.main --config=configs/distillm.py:real \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --config.data.lm_files=openwebtext.txt \
        --workdir=workdirs/distillm
"""

from jdistill import demo
from jdistill.engine import presets
from jdistill.engine.defaults import base_config


def get_config(arg=None):
    """The demo; with ``arg='real'`` (``--config=configs/distillm.py:real``) the real-checkpoint preset."""
    config = demo.apply_defaults(base_config("distillm"))
    config.student.path = "demo:student_sft"  # on-policy methods start from an SFT-warmed student (GKD, DistiLLM-2)
    config.method.divergence = "skew_forward_kl"
    config.method.skew_alpha = 0.1
    config.method.replay_capacity = 1000
    config.method.phi_init = 0.0
    config.method.phi_increment = 0.1
    config.method.phi_trigger = 0.1
    config.method.sampling.temperature = 1.0
    config.method.sampling.top_p = 1.0
    config.method.sampling.max_new_tokens = 24
    config.eval.every = -1  # once per epoch, as the release's --eval-interval -1
    if presets.preset(arg) == "real":
        presets.real_checkpoints(config, learning_rate=5e-4, batch_size=128, epochs=20)
        config.method.sampling.max_new_tokens = 0  # data.max_len - data.max_prompt_len = 256
    return config
