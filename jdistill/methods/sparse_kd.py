r"""Offline KD from stored top-k teacher targets; the teacher is not loaded during training.

For teachers too large to sit beside the student: the teacher answers the
training prompts once, ahead of training (``jdistill.generate`` with
``generation.num_topk_logprobs = k``), and stores with each response its
generated ids and, per response position, its ``k`` most likely next tokens with
their log-probabilities (:mod:`jdistill.data.stored_topk`). Training then reads
them as per-position batch arrays ``teacher_topk_ids`` / ``teacher_topk_logprobs``
``[B, T, k]`` (the response tokens are the teacher's exact ids, so row ``t``
belongs to ``targets[:, t]``) and minimises

.. math:: L = (1 - kd\_rate)\,CE(z_s, y) + kd\_rate\,\frac{1}{N}\sum_{b,t} M_{bt}\,
          D_{k+1}\big(p_{bt} \,\|\, q_{bt}\big)

where ``D_{k+1}`` is the forward KL over the ``k`` stored tokens plus one bucket
for the remaining mass (:func:`jdistill.losses.sparse_forward_kl`; exactly the
dense forward KL when ``k`` is the whole vocabulary). The stored log-probs come
from the teacher's full softmax at temperature 1; no temperature is applied.

The teacher's tokenizer must be the student's (checked: the stored ids must decode
to the response text with the student's tokenizer). With no
``method.teacher_data.responses_file`` the :func:`prepare` hook generates the records
with ``teacher.path`` first (SeqKD's code path, into
``workdir/teacher_topk.jsonl``, resumable). Held-out data without stored targets
(e.g. gold ``data.eval_files``) is scored by CE alone.
"""

from __future__ import annotations

import dataclasses

from jdistill import losses
from jdistill.data.records import DataError
from jdistill.data.stored_topk import IDS_KEY, LOGPROBS_KEY
from jdistill.methods import terms
from jdistill.methods.base import Method, ModelFacts
from jdistill.methods.seqkd import TeacherDataSettings, teacher_responses
from jdistill.methods.settings import MixSettings, check_range, setting

TOPK_FILE = "teacher_topk.jsonl"


@dataclasses.dataclass(frozen=True)
class TopKTeacherDataSettings(TeacherDataSettings):
    """The teacher's responses with its top-k log-probs per response token (greedy by default)."""

    temperature: float = setting(0.0, "Teacher sampling temperature; 0 = greedy (the stored targets' responses).")
    top_p: float = setting(1.0, "Nucleus threshold of the teacher's sampling.")
    num_topk_logprobs: int = setting(16, "Teacher top-k log-probs stored per response token.")

    def __post_init__(self):
        super().__post_init__()
        check_range("teacher_data.num_topk_logprobs", self.num_topk_logprobs, 0)


@dataclasses.dataclass(frozen=True)
class Settings(MixSettings):
    """(1 - kd_rate) CE + kd_rate KL_{k+1} to the stored top-k targets."""

    teacher_data: TopKTeacherDataSettings = setting(factory=TopKTeacherDataSettings, help="The stored targets.")

    def __post_init__(self):
        super().__post_init__()
        if self.fused == "on":
            raise ValueError("method.fused='on' is not available for sparse_kd (it needs the student's logits); "
                             "use method.fused='off' or 'auto'.")


def check_examples(examples, context):
    """Every training example must carry stored targets, all with one ``k``."""
    k = None
    for example in examples:
        if IDS_KEY not in example.extras:
            if context.split != "train":
                continue
            raise DataError(
                f"Training record {example.id} has no stored teacher top-k ('response_ids' and 'teacher_topk'). "
                "Sparse KD trains on records written by jdistill.generate with "
                "--config.generation.num_topk_logprobs=K (or let configs/sparse_kd.py generate them: "
                "leave teacher_data.responses_file empty and set teacher.path)."
            )
        found = example.extras[IDS_KEY].shape[1]
        if int(example.extras[IDS_KEY].max()) >= len(context.student_tokenizer):
            raise DataError(
                f"Record {example.id} stores teacher top-k ids beyond the student's {len(context.student_tokenizer)} "
                "tokens; the teacher's tokenizer must be the student's."
            )
        if k is not None and found != k:
            raise DataError(
                f"Record {example.id} stores the teacher's top-{found}, others top-{k}; regenerate the records "
                "with one generation.num_topk_logprobs."
            )
        k = found
    return examples


def make(settings: Settings, facts: ModelFacts = ModelFacts()) -> Method:
    vocab_size = terms.vocab_rows(settings, facts)
    k = int(settings.teacher_data.num_topk_logprobs)

    def prepare(config, workdir):
        if not settings.teacher_data.responses_file and k < 1:
            raise ValueError(
                "Sparse KD generates the teacher's top-k targets first: set "
                "--config.method.teacher_data.num_topk_logprobs=K (e.g. 16), or give records that already hold "
                "them with --config.method.teacher_data.responses_file=FILE."
            )
        return teacher_responses(config, workdir, settings.teacher_data, file_name=TOPK_FILE,
                                 num_topk_logprobs=k, label="Sparse KD")

    def loss(method_params, batch, student, teacher, ctx):
        del method_params, teacher
        ce = terms.response_cross_entropy(student, batch, ctx)
        if IDS_KEY not in batch:  # held-out data without stored targets: CE only
            return ce, {"ce": ce}
        kd_BxT = losses.sparse_forward_kl(student.output.logits[..., :vocab_size], batch[IDS_KEY], batch[LOGPROBS_KEY])
        kd = losses.token_mean(kd_BxT, batch["loss_mask"], normalizer=ctx.num_tokens)
        return terms.mix(settings, ce, kd), {"ce": ce, "kd": kd}

    return Method(
        name="sparse_kd", loss=loss, needs_teacher=False, prepare=prepare, prepare_examples=check_examples,
        stored_teacher_topk=True,
    )
