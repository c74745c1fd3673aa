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


LossFn = Callable[[Any, Mapping[str, Array], ModelView, "ModelView | None", StepContext], tuple[Array, dict]]
InitFn = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class Method:
    """A distillation method as the engine runs it.

    Attributes:
      name: registry name.
      loss: ``loss(method_params, batch, student, teacher, ctx) -> (loss, metrics)``.
      needs_teacher: run the teacher forward in the step.
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
      prepare: optional ``prepare(config, workdir)`` run on the host before the
        data is read, e.g. SeqKD's teacher generation; it may point
        ``config.data`` at the files it writes.
      prepare_examples: optional ``prepare_examples(examples, data_context) ->
        examples`` run on the host after tokenization (train and eval splits),
        e.g. to attach host-side alignments as per-position arrays in
        ``TokenizedExample.extras`` (collated into the batch under their keys).
    """

    name: str
    loss: LossFn
    needs_teacher: bool = True
    cross_vocabulary: bool = False
    init_params: InitFn | None = None
    student_call: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    teacher_call: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    prepare: Callable[[Any, str], None] | None = None
    prepare_examples: Callable[[list, "DataContext"], list] | None = None
