"""The interface between the training engine and a distillation method.

A method is a pure loss over model outputs (Tunix's ``compute_loss`` idea) plus
the trainable parameters it owns (projectors, ...). The engine runs both
models inside its one jitted step and hands the method everything it may need:

* the student's and the teacher's :class:`ModelView` (their outputs, and the
  modules themselves for ``embedding_table()`` / ``lm_head_weight()``);
* the micro-batch (``input_ids``, ``attention_mask``, ``targets``,
  ``loss_mask`` and, for cross-vocabulary methods, ``teacher_*`` arrays);
* a :class:`StepContext` with the training progress and the *global* counts
  that every loss must be normalised by, so that gradient accumulation and
  data parallelism give exactly the full-batch loss.

A loss returns ``(loss, metrics)``: both are sums over the micro-batch's tokens
divided by the global count, so the engine adds them up over micro-batches.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ModelView:
    """A model as a method sees it inside the step."""

    output: Any  # jdistill.models.DecoderOutput
    model: Any  # jdistill.models.Decoder (merged inside the step)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StepContext:
    """Per-step facts a loss may use.

    Attributes:
      progress: scalar in ``[0, 1]``, the fraction of training done (schedules).
      num_tokens: global number of student response tokens in this optimizer step.
      num_sequences: global number of sequences with at least one response token.
      teacher_num_tokens: the same count in the teacher's tokenization (equal to
        ``num_tokens`` when both share one).
      rng: raw ``uint32`` PRNG key data for this step (``jax.random.wrap_key_data``).
    """

    progress: Array
    num_tokens: Array
    num_sequences: Array
    teacher_num_tokens: Array
    rng: Array


@dataclasses.dataclass(frozen=True)
class DataContext:
    """What a method's host-side data hook may read.

    Attributes:
      config: the whole run config.
      workdir: the run's directory (for caches such as vocabulary maps).
      student_tokenizer: the student's Hugging Face tokenizer.
      teacher_tokenizer: the teacher's, or ``None`` when no teacher is loaded.
      split: ``'train'`` or ``'eval'``.
    """

    config: Any
    workdir: str
    student_tokenizer: Any
    teacher_tokenizer: Any
    split: str


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What a method may know of the run when it is made (from the tokenizers and paths, before any weights load).

    Attributes:
      vocab_size: the student tokenizer's size: the vocabulary rows the losses
        compare (a padded LM head has more), unless the method's
        ``vocab_size`` setting overrides it; ``None`` = the logits' width.
      teacher_vocab_size: the teacher tokenizer's size (``None`` without one).
      teacher_checkpoint: whether ``teacher.path`` names a checkpoint.
      teachers_share_vocabulary: per loaded teacher (``teacher.path``'s first,
        then ``teacher.extra_paths``'s in order), whether its tokenizer is the
        student's; ``()`` when unknown (a method made outside a run).
    """

    vocab_size: int | None = None
    teacher_vocab_size: int | None = None
    teacher_checkpoint: bool = False
    teachers_share_vocabulary: tuple[bool, ...] = ()


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Where a run's training records come from; a method's ``prepare`` hook may return another one.

    Attributes:
      train_files: comma-separated json/jsonl/parquet files (or a hub id).
      format: the record shape (``data.format``).
      prompt_template: the prompt template (``data.prompt_template``; empty = default).
    """

    train_files: str
    format: str = "auto"
    prompt_template: str = ""


# Method.teacher_mode values: a frozen loaded teacher, a loaded teacher trained alongside
# the student (online distillation), or an EMA of the student (self-distillation).
TEACHER_MODES = ("frozen", "trained", "ema")

LossFn = Callable[[Any, Mapping[str, Array], ModelView, "ModelView | None", StepContext], tuple[Array, dict]]
InitFn = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class Method:
    """A distillation method as the engine runs it.

    Attributes:
      name: registry name.
      loss: ``loss(method_params, batch, student, teacher, ctx) -> (loss, metrics)``.
      eval_loss: the same on held-out batches of gold responses (validation
        loss); ``None`` = ``loss``. A method whose training batches carry more
        than gold responses (DistiLLM-2's teacher and student responses) says
        what it measures on held-out data here.
      needs_teacher: run the teacher forward in the step.
      prompts_only: the method trains on responses it generates itself, never on
        the training records' responses: records with an empty response (an
        unlabelled prompt pool) are kept for training (validation data still
        needs responses).
      cross_vocabulary: the method handles different teacher/student tokenizers
        (the data pipeline then also tokenizes with the teacher's).
      init_params: ``init_params(key, student, teacher) -> pytree`` of trainable
        method parameters (``None``: the method owns none). ``student`` and
        ``teacher`` are the loaded models (``teacher`` is ``None`` without one):
        read ``.config`` for sizes, or the weights (``lm_head_weight()``) for
        data-dependent initialisations.
      student_call: extra keyword arguments for the student's forward
        (``output_hidden_states=True``, ``return_logits=False``, ...).
      teacher_call: the same for the teacher's forward.
      prepare: optional ``prepare(config, workdir) -> DataSpec | None`` run on
        the host before the data is read, e.g. SeqKD's teacher generation; it
        reads the (read-only) run config and returns where the training
        records now are (``None``: unchanged).
      prepare_examples: optional ``prepare_examples(examples, data_context) ->
        examples`` run on the host after tokenization (train and eval splits),
        e.g. to attach host-side alignments as per-position arrays in
        ``TokenizedExample.extras`` (collated into the batch under their keys).
      teacher_mode: where the teacher comes from and whether it learns
        (:data:`TEACHER_MODES`): ``'frozen'`` — the loaded teacher, under
        stop-gradient (the default); ``'trained'`` — the loaded teacher is
        trained in the same step (online distillation): its parameters are
        ``state.trainable['teacher']`` with their own optimizer group, get the
        loss's gradient (the method stops the gradient where it must), and are
        checkpointed and exported (``workdir/teacher_hf``); ``'ema'`` — no
        teacher is loaded: the teacher is an exponential moving average of the
        student kept in ``state.ema`` (self-distillation), under stop-gradient,
        updated after every optimizer step as ``ema ← d·ema + (1 − d)·student``
        with ``d = ema_decay``, checkpointed and exported.
      ema_decay: ``d`` of ``teacher_mode='ema'``.
      make_feed: ``None`` (train on the dataset batches) or
        ``make_feed(context) -> Feed``: the method's own on-policy data
        (:mod:`jdistill.rollout`; ``context`` is a
        :class:`jdistill.rollout.FeedContext`), which generates responses with
        the jitted sampler and hands them to the same train step as ordinary
        batch arrays.
      packable: the method's losses are per-token sums over the batch (no
        per-row structure: pooling, per-sequence normalisation, a second
        tokenization, its own feed), so the engine may pack several examples
        into one row with ``segment_ids`` (``data.packing``,
        :mod:`jdistill.data.packing`). Both forwards then get the batch's
        ``segment_ids``; a packed batch has fewer rows than examples.
      teacher_list: the loss takes several frozen teachers: its ``teacher``
        argument is then a tuple of :class:`ModelView` (``teacher.path``'s
        first, then ``teacher.extra_paths``'s in order; one entry when no
        extra teacher is given). A teacher whose tokenizer is the student's
        reads the student's arrays; one with another vocabulary reads the
        ``teacher_*`` arrays (then ``cross_vocabulary`` must be set). Other
        methods take exactly one teacher.
    """

    name: str
    loss: LossFn
    eval_loss: LossFn | None = None
    needs_teacher: bool = True
    cross_vocabulary: bool = False
    prompts_only: bool = False
    init_params: InitFn | None = None
    student_call: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    teacher_call: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    prepare: Callable[[Any, str], "DataSpec | None"] | None = None
    prepare_examples: Callable[[list, "DataContext"], list] | None = None
    teacher_mode: str = "frozen"
    ema_decay: float = 0.99
    make_feed: Callable[[Any], Any] | None = None
    packable: bool = False
    teacher_list: bool = False

    def __post_init__(self):
        if self.teacher_mode not in TEACHER_MODES:
            raise ValueError(
                f"Method {self.name!r}: teacher_mode must be one of {TEACHER_MODES}, got {self.teacher_mode!r}."
            )
        if self.teacher_mode != "frozen" and not self.needs_teacher:
            raise ValueError(f"Method {self.name!r}: teacher_mode={self.teacher_mode!r} needs needs_teacher=True.")
        if self.teacher_mode == "ema" and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"Method {self.name!r}: ema_decay must lie in [0, 1), got {self.ema_decay}.")
        if self.packable and (self.cross_vocabulary or self.make_feed is not None or self.teacher_list):
            raise ValueError(f"Method {self.name!r}: packable=True is for one tokenization and dataset batches.")
        if self.teacher_list and (self.teacher_mode != "frozen" or not self.needs_teacher):
            raise ValueError(f"Method {self.name!r}: teacher_list needs needs_teacher=True and frozen teachers.")
