"""Score trained models on held-out records: ROUGE-L and exact match (greedy, and sampled over seeds),
cross-entropy / perplexity of the reference responses, and the KL to a reference teacher.

Run (a teacher, an SFT baseline and a distilled student on one test file):

    python -m jdistill.evaluate --config=configs/evaluate.py \
        --config.models=TEACHER_DIR,workdirs/sft/student_hf,workdirs/kd/student_hf \
        --config.names=teacher,sft,kd --config.reference_teacher=TEACHER_DIR \
        --config.data.files=test.jsonl --config.output=workdirs/scores.json

Expected: a progress line per model, then a table with one row per model
(``rougeL_greedy``, ``exact_match_greedy``, ``rougeL_sampled`` ± its std over
the ``generation.num_samples`` seeds, ``exact_match_sampled``, ``ce``,
``perplexity``, ``teacher_kl``) and the same results in the JSON file. The
defaults follow the DSKD / DistiLLM evaluation: sampling at temperature 1,
top-p 1, five seeds; a record's ``references`` list counts as extra valid
answers (ROUGE-L takes the best).
"""

from jdistill.engine.scoring import base_config


def get_config():
    return base_config()
