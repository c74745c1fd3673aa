"""A FeedContext on hand-made examples (no models): for feed tests and for methods' ``make_feed``."""

import numpy as np

from jdistill import rollout
from jdistill.data.batching import BatchSource, DataPosition
from jdistill.data.tokenize import TokenizedExample, TokenizedSide
from jdistill.sampling import SamplingSettings, StopTokens

PAD, EOS = 0, 2
# The teacher's checkpoint ends turns at another id than the student's.
STUDENT_STOP, TEACHER_STOP = StopTokens((EOS,), PAD), StopTokens((EOS, 7), PAD)


class Writer:
    def __init__(self):
        self.records = []

    def write(self, step, metrics, *, split):
        self.records.append((step, split, dict(metrics)))


def examples(n=12):
    out = []
    for i in range(n):
        prompt = [1, 10 + i % 5] + [3] * (i % 3)
        ids = np.asarray(prompt + [20 + i, EOS], np.int32)
        out.append(TokenizedExample(id=f"e{i}", student=TokenizedSide(ids, len(prompt))))
    return out


SAMPLING = SamplingSettings(max_new_tokens=4, temperature=1.0)


def make_ctx(tmp_path, *, batch_size=4, total_steps=30, seed=0, restored=None, resume_epoch=None):
    source = BatchSource(examples(), batch_size=batch_size, seed=seed, buckets=(16,), pad_id=PAD)
    ctx = rollout.FeedContext(
        source=source, collate_kwargs=dict(buckets=(16,), pad_id=PAD), student_graphdef=None, teacher="teacher",
        student_stop=STUDENT_STOP, teacher_stop=TEACHER_STOP, mesh=None, writer=Writer(), workdir=str(tmp_path),
        total_steps=total_steps, seed=seed, max_len=16, max_prompt_len=12, restored=restored,
        resume_position=None if resume_epoch is None else DataPosition(resume_epoch, 0),
    )
    ctx.student = lambda state: "student"  # the stub below tells the models apart by name
    return ctx
