"""SeqKD and black-box distillation: the student is fine-tuned on the teacher's responses.

The teacher answers every training prompt first (``jdistill.generate``;
written to ``<workdir>/teacher_responses.jsonl`` and resumed on a rerun), then
the student trains with NLL on those responses; the teacher is not loaded
during training. The teacher samples at temperature 0.8, top-p 0.95, as
DistiLLM-2's generation script (``generate/generate_vllm.py``), whose tables
report this SeqKD baseline; DistiLLM's ``generate_data_seqkd.sh`` samples at
temperature 1.0, top-p 1.0 (``--config.method.teacher_data.temperature=1.0
--config.method.teacher_data.top_p=1.0``) and Kim & Rush decode with beam search
(``--config.method.teacher_data.temperature=0`` is greedy, its beam-1 case).

Demo (no overrides):

    python -m jdistill.main --config=configs/seqkd.py

Expected on the demo: a generation progress bar (tokens/s), then training and
the teacher vs SFT-only vs SeqKD student table on the test split.

Chain-of-thought distillation (the teacher's rationale and answer become the target):

    python -m jdistill.main --config=configs/seqkd.py \
        --config.method.teacher_data.cot_template="{prompt} Let's think step by step."

Black-box distillation from responses produced elsewhere (e.g. an API-only
teacher), a JSONL of {"prompt", "response"} records; no teacher model at all,
and the responses file is the training data (so ``teacher.path`` and
``data.train_files`` are set empty; the settings are the real-checkpoint
preset's, below):

    python -m jdistill.main --config=configs/seqkd.py:real \
        --config.teacher.path= --config.data.train_files= \
        --config.method.teacher_data.responses_file=api_responses.jsonl \
        --config.student.path=STUDENT_DIR --config.data.eval_files=valid.jsonl

Real checkpoints: ``configs/seqkd.py:real`` replaces the demo's paths and
tiny-model settings (learning rate 1e-3, 64-token sequences, 400 steps of 32)
with the values of the SFT scripts configs/sft.py quotes (SeqKD is SFT on the
teacher's responses): learning rate 5e-4, 32 sequences per step, 20 epochs,
teacher responses of up to 256 tokens; 512-token sequences with 256-token
prompts, a bfloat16 teacher, an evaluation per epoch. It has no default for the
teacher, the student and the training data: a run that leaves one out stops at
once, naming the flag (``--config.help`` prints every field with its value and
meaning):

    python -m jdistill.main --config=configs/seqkd.py:real \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --workdir=workdirs/seqkd
"""

from jdistill import demo
from jdistill.engine import presets
from jdistill.engine.defaults import base_config


def get_config(arg=None):
    """The demo; with ``arg='real'`` (``--config=configs/seqkd.py:real``) the real-checkpoint preset."""
    config = demo.apply_defaults(base_config("seqkd"))
    config.data.train_files = "demo:prompts"  # the unlabelled prompt pool: the teacher answers it
    config.method.teacher_data.max_new_tokens = 24
    config.method.teacher_data.temperature = 0.8  # DistiLLM-2's teacher sampling
    config.method.teacher_data.top_p = 0.95
    if presets.preset(arg) == "real":
        presets.real_checkpoints(config, learning_rate=5e-4, batch_size=32, epochs=20)
        config.method.teacher_data.max_new_tokens = 256
    return config
