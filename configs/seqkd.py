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
teacher), a JSONL of {"prompt", "response"} records; no teacher model at all:

    python -m jdistill.main --config=configs/seqkd.py --config.teacher.path= \
        --config.method.teacher_data.responses_file=api_responses.jsonl \
        --config.student.path=STUDENT_DIR --config.optimizer.learning_rate=2e-5

Real checkpoints:

    python -m jdistill.main --config=configs/seqkd.py \
        --config.teacher.path=TEACHER_DIR --config.student.path=STUDENT_DIR \
        --config.data.train_files=train.jsonl --config.data.eval_files=valid.jsonl \
        --config.method.teacher_data.max_new_tokens=256 --config.optimizer.learning_rate=2e-5 \
        --config.data.max_len=512 --config.data.max_prompt_len=256 --workdir=workdirs/seqkd
"""

from jdistill import demo
from jdistill.engine.defaults import base_config


def get_config():
    config = demo.apply_defaults(base_config("seqkd"))
    config.method.teacher_data.max_new_tokens = 24
    config.method.teacher_data.temperature = 0.8  # DistiLLM-2's teacher sampling
    config.method.teacher_data.top_p = 0.95
    return config
