"""Teacher data generation for black-box distillation / SeqKD.

A teacher (a Hugging Face directory) answers every prompt of a dataset; the
answers go to a JSONL file of ``{"id", "prompt", "response", "stop"}`` records
(chats: ``{"id", "messages", "response", "stop"}``). With
``generation.num_topk_logprobs = k`` the generated ids and the teacher's top-k
log-probs per response token go to a top-k store beside it (``x.jsonl`` ->
``x.topk``; ``output.topk_dir``), which sparse KD reads. Train on it with
``--config.data.train_files=OUTPUT --config.data.format=prompt_response``.

Run:

    python -m jdistill.generate --config=configs/generate.py \
        --config.teacher.path=TEACHER_DIR \
        --config.data.prompt_files=prompts.jsonl \
        --config.output.path=data/teacher_responses.jsonl

Expected: a log line with the number of prompts (already answered / to answer
/ skipped, with reasons), a progress bar with tokens/s, then one JSONL line
per answered prompt. Interrupt and re-run the same command: answered prompts
are skipped, a partial last line is removed, at most one batch is lost.
"""

from jdistill.teacher_data.defaults import base_config


def get_config():
    return base_config()
