r"""Offline KD from stored top-k teacher targets; the teacher is not loaded during training.

For teachers too large to sit beside the student: the teacher runs once, ahead
of training, and a top-k store (:mod:`jdistill.data.topk_store`: sharded,
memory-mapped ``.npy`` arrays) keeps, per trained token, its ``k`` most likely
next tokens with their log-probabilities (full softmax, temperature 1). Two
sources (``method.teacher_data.source``):

* ``'dataset'``: **teacher-forced on the dataset's own responses**
  (``python -m jdistill.teacher_logits``, :mod:`jdistill.teacher_data.teacher_forced`):
  the training records are tokenized exactly as training reads them, every
  trained token (every assistant turn of a chat) gets the teacher's top-k;
* ``'generate'``: **the teacher's own responses** (``jdistill.generate`` with
  ``generation.num_topk_logprobs = k``): the store holds the generated ids and
  their top-k, the JSONL the text; training takes the teacher's exact ids as the
  response tokens.

Training attaches each example's rows as per-position batch arrays
``teacher_topk_ids`` / ``teacher_topk_logprobs`` ``[B, T, k]`` (row ``t``
describes ``targets[:, t]``; read from the memory-mapped store when the batch is
built) and minimises

.. math:: L = (1 - kd\_rate)\,CE(z_s, y) + kd\_rate\,\frac{1}{N}\sum_{b,t} M_{bt}\,
          D_{k+1}\big(p_{bt} \,\|\, q_{bt}\big)

where ``D_{k+1}`` is the forward KL over the ``k`` stored tokens plus one bucket
for the remaining mass (:func:`jdistill.losses.sparse_forward_kl`; exactly the
dense forward KL when ``k`` is the whole vocabulary). With the teacher-forced
store this is the loss an online sparse KD (the teacher's top-k computed in the
step) gives on the same batch, up to float16 rounding of the stored log-probs.

Checks: the store's tokenizer is the student's (vocabulary fingerprint) and its
``k`` the configured one; a teacher-forced example's tokens and trained spans are
the stored ones; a generated response's prompt is the one the teacher answered
and its ids decode to the record's text. With no store yet, :func:`make`'s
``prepare`` hook writes it with ``teacher.path`` (resumable; nothing is loaded
when the store is complete). Held-out data without stored targets (gold
``data.eval_files``) is scored by CE alone.
"""

from __future__ import annotations

import dataclasses
import os

from jdistill import console, losses
from jdistill.data import topk_store
from jdistill.data.records import DataError
from jdistill.data.topk_store import IDS_KEY, LOGPROBS_KEY
from jdistill.methods import terms
from jdistill.methods.base import Method, ModelFacts
from jdistill.methods.seqkd import TeacherDataSettings, teacher_responses
from jdistill.methods.settings import MixSettings, check_choice, check_range, setting

TOPK_FILE = "teacher_topk.jsonl"
LOGITS_DIR = "teacher_logits"
SOURCES = ("generate", "dataset")
_STORE_SOURCE = {"generate": "generated", "dataset": "teacher_forced"}


@dataclasses.dataclass(frozen=True)
class TopKTeacherDataSettings(TeacherDataSettings):
    """The teacher's top-k log-probs per trained token: on its own responses (greedy by default) or on the dataset's."""

    source: str = setting("generate", "'generate': the teacher answers the prompts; 'dataset': teacher-forced on "
                                      "the training records' own responses (python -m jdistill.teacher_logits).")
    logits_dir: str = setting("", "The top-k store; empty = workdir/teacher_logits ('dataset'), or beside the "
                                  "responses ('generate': x.jsonl -> x.topk).")
    temperature: float = setting(0.0, "Teacher sampling temperature; 0 = greedy (the stored targets' responses).")
    top_p: float = setting(1.0, "Nucleus threshold of the teacher's sampling.")
    num_topk_logprobs: int = setting(16, "Teacher top-k log-probs stored per response token.")
    logprobs_dtype: str = setting("float16", "Stored log-prob dtype: 'float16' (2 bytes) | 'float32'.")
    shard_tokens: int = setting(262144, "Tokens per store shard (a crash loses at most the shard being written).")

    def __post_init__(self):
        super().__post_init__()
        check_range("teacher_data.num_topk_logprobs", self.num_topk_logprobs, 0)
        check_choice("teacher_data.source", self.source, SOURCES)
        check_choice("teacher_data.logprobs_dtype", self.logprobs_dtype, topk_store.LOGPROBS_DTYPES)
        check_range("teacher_data.shard_tokens", self.shard_tokens, 1)


@dataclasses.dataclass(frozen=True)
class Settings(MixSettings):
    """(1 - kd_rate) CE + kd_rate KL_{k+1} to the stored top-k targets."""

    teacher_data: TopKTeacherDataSettings = setting(factory=TopKTeacherDataSettings, help="The stored targets.")

    def __post_init__(self):
        super().__post_init__()
        if self.fused == "on":
            raise ValueError("method.fused='on' is not available for sparse_kd (it needs the student's logits); "
                             "use method.fused='off' or 'auto'.")


def store_dir(teacher_data: TopKTeacherDataSettings, workdir: str) -> str:
    """The top-k store a run reads (and writes when it has to)."""
    if teacher_data.logits_dir:
        return teacher_data.logits_dir
    if teacher_data.source == "dataset":
        return os.path.join(workdir, LOGITS_DIR)
    return topk_store.beside(teacher_data.responses_file or os.path.join(workdir, TOPK_FILE))


def write_teacher_logits(config, workdir: str, teacher_data: TopKTeacherDataSettings):
    """The teacher-forced pass over ``config``'s training records into the store (resumable)."""
    from jdistill.teacher_data import teacher_forced

    if teacher_data.num_topk_logprobs < 1:
        raise ValueError("Set --config.method.teacher_data.num_topk_logprobs=K (e.g. 16): the top-k size to store.")
    settings = teacher_forced.ForcedSettings(
        out_dir=store_dir(teacher_data, workdir), k=int(teacher_data.num_topk_logprobs),
        batch_size=int(teacher_data.batch_size), logprobs_dtype=teacher_data.logprobs_dtype,
        shard_tokens=int(teacher_data.shard_tokens), progress_bar=bool(config.logging.progress_bar),
    )
    return teacher_forced.run(config, settings)


class _Attach:
    """``prepare_examples``: each example gets its stored rows (lazily read) or, held out, CE alone."""

    def __init__(self, settings: Settings, k: int):
        self.settings, self.k = settings, k
        self.store = None

    def open(self, context) -> topk_store.TopKStore:
        directory = store_dir(self.settings.teacher_data, context.workdir)
        if self.store is None or self.store.directory != directory:
            self.store = topk_store.TopKStore(directory)
            topk_store.check_store(self.store, context.student_tokenizer, k=self.k)
            wanted = _STORE_SOURCE[self.settings.teacher_data.source]
            if self.store.source != wanted:
                raise DataError(
                    f"{directory!r} holds top-k of {self.store.source} responses, but "
                    f"method.teacher_data.source={self.settings.teacher_data.source!r} reads {wanted} ones."
                )
            console.info(f"sparse KD reads the top-k store {directory}: {self.store.summary()}")
        return self.store

    def __call__(self, examples, context):
        store = self.open(context)
        data = context.config.data
        attach = dict(tokenizer=context.student_tokenizer, max_len=int(data.max_len), policy=str(data.truncation))
        if context.split != "train":
            return self._held_out(examples, store, attach)
        out, left_out = [], 0
        for example in examples:
            if example.id not in store:
                raise DataError(
                    f"Training record {example.id!r} has no teacher top-k in {store.directory!r}. Write them: "
                    "`python -m jdistill.teacher_logits --config=...` (teacher-forced on the dataset, "
                    "method.teacher_data.source='dataset'), or jdistill.generate with "
                    "--config.generation.num_topk_logprobs=K ('generate'), or give teacher.path and let the run "
                    "write them."
                )
            attached, reason = topk_store.with_stored_topk(example, store, **attach)
            if attached is None:
                left_out += 1
                continue
            out.append(attached)
        if left_out:
            console.info(f"sparse KD: {left_out} training examples left out ({reason})")
        return out

    @staticmethod
    def _held_out(examples, store, attach):
        """All held-out examples with stored rows, or none (a batch cannot mix both): CE alone then."""
        out = []
        for example in examples:
            if example.id not in store:
                return examples
            try:
                attached, _ = topk_store.with_stored_topk(example, store, **attach)
            except DataError:  # another record with the same id (gold eval files)
                return examples
            if attached is None:
                return examples
            out.append(attached)
        return out


def make(settings: Settings, facts: ModelFacts = ModelFacts()) -> Method:
    vocab_size = terms.vocab_rows(settings, facts)
    teacher_data = settings.teacher_data
    k = int(teacher_data.num_topk_logprobs)

    def prepare(config, workdir):
        if teacher_data.source == "dataset":
            directory = store_dir(teacher_data, workdir)
            if config.teacher.path:
                write_teacher_logits(config, workdir, teacher_data)
            elif not os.path.exists(os.path.join(directory, topk_store.MANIFEST)):
                raise ValueError(
                    f"Sparse KD reads the teacher's top-k from {directory!r}, which holds no store. Write it first "
                    "with `python -m jdistill.teacher_logits` and the same config, or set teacher.path so that the "
                    "run writes it (or method.teacher_data.logits_dir to where it is)."
                )
            return None
        if not teacher_data.responses_file and k < 1:
            raise ValueError(
                "Sparse KD generates the teacher's top-k targets first: set "
                "--config.method.teacher_data.num_topk_logprobs=K (e.g. 16), or give records that already hold "
                "them with --config.method.teacher_data.responses_file=FILE."
            )
        output = {"topk_dir": store_dir(teacher_data, workdir), "topk_logprobs_dtype": teacher_data.logprobs_dtype,
                  "topk_shard_tokens": int(teacher_data.shard_tokens)}
        return teacher_responses(config, workdir, teacher_data, file_name=TOPK_FILE, num_topk_logprobs=k,
                                 label="Sparse KD", output=output)

    def loss(method_params, batch, student, teacher, ctx):
        del method_params, teacher
        ce = terms.response_cross_entropy(student, batch, ctx)
        if IDS_KEY not in batch:  # held-out data without stored targets: CE only
            return ce, {"ce": ce}
        kd_BxT = losses.sparse_forward_kl(student.output.logits[..., :vocab_size], batch[IDS_KEY], batch[LOGPROBS_KEY])
        kd = losses.token_mean(kd_BxT, batch["loss_mask"], normalizer=ctx.num_tokens)
        return terms.mix(settings, ce, kd), {"ce": ce, "kd": kd}

    return Method(
        name="sparse_kd", loss=loss, needs_teacher=False, prepare=prepare, prepare_examples=_Attach(settings, k),
        packable=True,
    )
