"""The one train step every method runs in, and its evaluation twin.

``train_step(state, teacher_params, batch, spec)`` is a pure function:

1. the global batch ``[B, ...]`` is split into ``grad_accum`` micro-batches
   (each device keeps its own rows, so no data moves);
2. per micro-batch: the teacher forward under ``stop_gradient``, the student
   forward and backward, and the method's loss normalised by the *global*
   response-token count of the whole step (so the micro-batch losses and
   gradients add up to exactly the full-batch ones); a method that takes
   several frozen teachers gets all of their forwards (``StepSpec.extra_teacher_graphdefs``);
3. one optax update of ``{'student', 'method'}`` parameters (and
   ``'teacher'`` when the method trains it: online distillation); a step whose
   loss or gradient is not finite changes nothing but the skip counters;
4. with an EMA teacher (self-distillation), ``state.ema`` follows the new
   student: ``ema ← d·ema + (1 − d)·student``
   (:class:`~jdistill.engine.teacher_source.EmaTeacher`).

With LoRA (``student.lora.rank``, ``teacher.lora.rank``;
:mod:`jdistill.models.lora`) ``trainable['student']`` (and a trained
teacher's ``trainable['teacher']``) hold only the adapters; the frozen base
weights ride in ``state.frozen``, which the step passes through unchanged, the
optimizer never sees and the checkpoints leave out.

:func:`jit_train_step` compiles it with explicit in/out shardings and donates
the state.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jdistill import losses
from jdistill.data.lm_text import LM_KEYS
from jdistill.engine.teacher_source import NoTeacher, TeacherSource, teacher_source
from jdistill.methods.base import Method, ModelView, StepContext
from jdistill.models import lora as model_lora
from jdistill.models import per_layer
from jdistill.models import sharding as model_sharding
from jdistill.models.param_paths import flatten_with_param_paths, map_with_param_path

Array = jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything that changes during training (and is checkpointed).

    Attributes:
      step: steps taken, skipped ones included (int32 scalar): the number the
        loop, the checkpoints, the metrics and the data position all use.
        Updates applied = ``step - bad_steps_total``.
      trainable: ``{'student': nnx.State, 'method': pytree}``, plus
        ``'teacher': nnx.State`` when the method trains its teacher
        (a :class:`~jdistill.engine.teacher_source.TrainedTeacher`).
      opt_state: the optax state of ``trainable``.
      rng: raw ``uint32`` PRNG key data (checkpointable), split every step.
      bad_steps_in_a_row: consecutive skipped (non-finite) steps.
      bad_steps_total: skipped steps over the whole run.
      bad_teacher_steps_total: of those, steps skipped because the teacher's
        outputs were not finite.
      ema: the EMA of the student's parameters that serves as the teacher
        (:class:`~jdistill.engine.teacher_source.EmaTeacher`; not trained by the optimizer), else ``None``.
      frozen: with LoRA, the frozen base weights: ``{'student': nnx.State}``
        and/or ``{'teacher': nnx.State}`` (a trained teacher with LoRA); never
        trained, never checkpointed (reloaded from the checkpoints' paths);
        ``None`` without LoRA.
    """

    step: Array
    trainable: Any
    opt_state: Any
    rng: Array
    bad_steps_in_a_row: Array
    bad_steps_total: Array
    bad_teacher_steps_total: Array
    ema: Any = None
    frozen: Any = None


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """The static parts of a step: what to run, not the arrays it runs on."""

    method: Method
    optimizer: optax.GradientTransformation
    student_graphdef: Any
    teacher_graphdef: Any  # None when the method needs no teacher
    grad_accum: int
    total_steps: int
    mesh: Mesh | None = None  # the device mesh (None: single device, no constraints)
    lm_coef: float = 0.0  # weight of the LM cross-entropy on the batch's lm_* rows (data.lm_files)
    teacher: TeacherSource | None = None  # None: teacher_source(method)
    # A method with Method.teacher_list: the graphdefs of teacher.extra_paths's teachers (the step's teacher
    # parameters are then a tuple, teacher.path's first), and per teacher the prefix of the batch arrays it
    # reads ('' or 'teacher_'; empty: the one-teacher rule, 'teacher_' for cross-vocabulary methods).
    extra_teacher_graphdefs: tuple = ()
    teacher_prefixes: tuple = ()

    @property
    def teacher_source(self) -> TeacherSource:
        return self.teacher if self.teacher is not None else teacher_source(self.method)

    def prefixes(self) -> tuple[str, ...]:
        """Per teacher the prefix of the batch arrays its forward reads."""
        count = 1 + len(self.extra_teacher_graphdefs)
        if self.teacher_prefixes:
            return tuple(self.teacher_prefixes)
        return ("teacher_" if self.method.cross_vocabulary else "",) * count


def init_train_state(student_params, method_params, optimizer, seed: int, *,
                     teacher: TeacherSource | None = None, loaded_teacher=None, frozen=None) -> TrainState:
    """The state before the first step.

    ``frozen``: the LoRA models' frozen base weights (see :class:`TrainState`);
    ``student_params`` (and ``loaded_teacher`` for a trained teacher) are then
    their adapters.

    ``teacher`` (a :class:`~jdistill.engine.teacher_source.TeacherSource`; none
    by default) adds what it keeps in the state: a trained teacher's
    parameters (``loaded_teacher``) as ``trainable['teacher']``, or an EMA
    teacher's copy of the student as ``ema``.
    """
    teacher = teacher or NoTeacher()
    extra, ema = teacher.initial(student_params, loaded_teacher)
    trainable = {"student": student_params, "method": method_params, **extra}
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        trainable=trainable,
        opt_state=optimizer.init(trainable),
        rng=jax.random.key_data(jax.random.key(seed)),
        bad_steps_in_a_row=jnp.zeros((), jnp.int32),
        bad_steps_total=jnp.zeros((), jnp.int32),
        bad_teacher_steps_total=jnp.zeros((), jnp.int32),
        ema=ema,
        frozen=frozen or None,
    )


def frozen_part(frozen, name: str):
    """The frozen base of ``'student'`` / ``'teacher'`` (a LoRA model), else ``None``."""
    return None if not frozen else frozen.get(name)


def student_model(graphdef, trainable, frozen=None):
    """The student module from the trainable parameters (and, with LoRA, the frozen base)."""
    return model_lora.merge(graphdef, trainable["student"], frozen_part(frozen, "student"))


# Folded into the step's key for the LoRA adapters' dropout (a stream of its own).
LORA_DROPOUT_STREAM = 0x10A


def _split_micro_batches(batch: Mapping[str, Array], grad_accum: int, mesh: Mesh | None) -> dict:
    """``[B, ...]`` → ``[A, B/A, ...]`` with micro-batch ``a`` = rows ``a, a+A, a+2A, ...``.

    Interleaving keeps every micro-batch spread over all data-parallel devices
    in the same proportion as the full batch, so the split moves no data.
    """

    batch_axes = None if mesh is None else model_sharding.batch_sharding(mesh).spec[0]

    def split(x):
        rows = x.shape[0]
        y = x.reshape(rows // grad_accum, grad_accum, *x.shape[1:]).swapaxes(0, 1)
        if mesh is not None:
            # Under a context mesh (jax.set_mesh; Auto inside auto_axes) a bare spec refers to it.
            context = not jax.sharding.get_abstract_mesh().empty
            target = P(None, batch_axes) if context else NamedSharding(mesh, P(None, batch_axes))
            y = jax.lax.with_sharding_constraint(y, target)
        return y

    return {k: split(v) for k, v in batch.items()}


def _counts(batch: Mapping[str, Array]) -> tuple[Array, Array, Array]:
    loss_mask = batch["loss_mask"]
    num_tokens = jnp.sum(loss_mask)
    if SEGMENT_IDS in batch:
        num_sequences = trained_segment_count(loss_mask, batch[SEGMENT_IDS])
    else:
        num_sequences = jnp.sum(jnp.any(loss_mask > 0, axis=-1).astype(jnp.float32))
    teacher_tokens = jnp.sum(batch["teacher_loss_mask"]) if "teacher_loss_mask" in batch else num_tokens
    return num_tokens, num_sequences, teacher_tokens


# The batch key of packed batches (jdistill.data.packing): which example each position belongs to.
SEGMENT_IDS = "segment_ids"


def trained_segment_count(loss_mask_BxT: Array, segment_ids_BxT: Array) -> Array:
    """How many packed segments (examples) have at least one response token (float32 scalar).

    Segments are contiguous runs of equal ids in a row; a position counts when
    it is a response token and no earlier position of its segment is one.

    Example:
      >>> import jax.numpy as jnp
      >>> m = jnp.array([[0, 1, 1, 0, 1, 0], [0, 0, 1, 0, 0, 0]])
      >>> s = jnp.array([[1, 1, 1, 2, 2, 3], [1, 1, 1, 2, 2, 0]])
      >>> float(trained_segment_count(m, s))
      3.0
    """
    trained_BxT = (loss_mask_BxT > 0).astype(jnp.int32)
    seen_BxT = jnp.cumsum(trained_BxT, axis=-1)
    starts_BxT = jnp.concatenate(
        [jnp.ones_like(segment_ids_BxT[:, :1], bool), segment_ids_BxT[:, 1:] != segment_ids_BxT[:, :-1]], axis=-1
    )
    # Response tokens before each segment's start (a running maximum carries it: the count never decreases).
    before_BxT = jax.lax.cummax(jnp.where(starts_BxT, seen_BxT - trained_BxT, 0), axis=1)
    first_BxT = (trained_BxT > 0) & (seen_BxT - trained_BxT - before_BxT == 0)
    return jnp.sum(first_BxT.astype(jnp.float32))


def model_views(trainable, teacher_params, micro_batch, spec: StepSpec, frozen=None,
                dropout_rng=None) -> tuple[ModelView, ModelView | None]:
    """The student's and (when the method needs one) the teacher's forward on one micro-batch.

    A packed batch's ``segment_ids`` go to both forwards. The teacher's
    parameters come from the spec's teacher source: the step's
    ``teacher_params`` under stop-gradient (a frozen teacher or the EMA), or
    ``trainable['teacher']`` with its gradient when the method trains it.
    ``frozen``: the LoRA models' frozen bases (:class:`TrainState`);
    ``dropout_rng`` (training only): the key of the LoRA adapters' dropout.
    """
    method = spec.method
    # A packed batch: both models attend within, and number positions from, each example's segment.
    packed = {"segment_ids": micro_batch[SEGMENT_IDS]} if SEGMENT_IDS in micro_batch else {}
    student = student_model(spec.student_graphdef, trainable, frozen)
    if dropout_rng is not None:
        model_lora.set_dropout_keys(student, jax.random.fold_in(dropout_rng, 0))
    student_out = student(micro_batch["input_ids"], micro_batch["attention_mask"], **packed, **method.student_call)
    teacher_view = None
    source = spec.teacher_source
    if source.runs:
        params = source.forward_params(trainable, teacher_params)
        graphdefs = (spec.teacher_graphdef, *spec.extra_teacher_graphdefs)
        params = tuple(params) if method.teacher_list else (params,)
        views = []
        for k, (graphdef, teacher_state, prefix) in enumerate(zip(graphdefs, params, spec.prefixes(), strict=True)):
            call = dict(method.teacher_call)
            if isinstance(teacher_state, per_layer.PerLayerParams):  # teacher.layers = 'per_layer'
                teacher, call["block_states"] = per_layer.merge(graphdef, teacher_state)
            else:
                # The extra teachers of a teacher_list method are frozen and never carry LoRA adapters.
                teacher = model_lora.merge(graphdef, teacher_state, source.frozen_base(frozen) if k == 0 else None)
            if k == 0 and dropout_rng is not None and source.trained:
                model_lora.set_dropout_keys(teacher, jax.random.fold_in(dropout_rng, 1))
            teacher_out = teacher(
                micro_batch[f"{prefix}input_ids"], micro_batch[f"{prefix}attention_mask"], **packed, **call,
            )
            views.append(ModelView(teacher_out if source.trained else jax.lax.stop_gradient(teacher_out), teacher))
        teacher_view = tuple(views) if method.teacher_list else views[0]
    return ModelView(student_out, student), teacher_view


def forward_and_loss(trainable, teacher_params, micro_batch, ctx: StepContext, spec: StepSpec,
                     lm_num_tokens=None, frozen=None):
    """The method's loss on one micro-batch: teacher and student forwards (:func:`model_views`).

    With ``lm_*`` rows in the batch (unlabelled text, ``data.lm_files``) the
    student's cross-entropy on them, divided by ``lm_num_tokens`` (their
    global count in the step) and weighted by ``spec.lm_coef``, is added to
    the loss and reported as ``lm_loss``.

    With a teacher, ``metrics[TEACHER_NONFINITE]`` counts its non-finite
    outputs (:func:`teacher_nonfinite_count`); :func:`train_step` skips such a
    step and removes the key. ``frozen``: the LoRA bases (:class:`TrainState`);
    the adapters' dropout draws from ``ctx.rng``.
    """
    dropout_rng = jax.random.fold_in(jax.random.wrap_key_data(ctx.rng), LORA_DROPOUT_STREAM)
    student_view, teacher_view = model_views(trainable, teacher_params, micro_batch, spec, frozen, dropout_rng)
    loss, metrics = spec.method.loss(trainable["method"], micro_batch, student_view, teacher_view, ctx)
    if teacher_view is not None:
        views = teacher_view if spec.method.teacher_list else (teacher_view,)
        bad = sum(teacher_nonfinite_count(view.output, micro_batch[f"{prefix}attention_mask"])
                  for view, prefix in zip(views, spec.prefixes()))
        metrics = {**metrics, TEACHER_NONFINITE: bad}
    if LM_KEYS[0] in micro_batch:
        lm_loss = language_modelling_loss(trainable, micro_batch, spec, frozen, dropout_rng) / lm_num_tokens
        loss = loss + spec.lm_coef * lm_loss
        metrics = {**metrics, "lm_loss": lm_loss}
    return loss, metrics


# The metric key under which forward_and_loss counts the teacher's non-finite outputs.
TEACHER_NONFINITE = "teacher_nonfinite"


def teacher_nonfinite_count(output, attention_mask: Array) -> Array:
    """How many real (attended) token positions of the teacher's outputs are not finite (float32 scalar).

    The divergence kernels treat a non-finite logit as probability 0, so a
    teacher that overflows (bf16) or holds NaN weights would otherwise give a
    loss of 0, silently. Checked: the hidden states the LM head reads (what the
    fused path uses; ``all_hidden_states`` too when returned) must be finite;
    logits must have no NaN or ``+inf`` and at least one finite entry per
    position (``-inf`` entries stay legal: masked vocabulary rows). Padding
    positions are not checked.
    """
    real_BxT = attention_mask.astype(bool)
    hidden = output.hidden_states
    bad_BxT = ~jnp.all(jnp.isfinite(hidden), axis=-1)
    if output.all_hidden_states is not None:
        bad_BxT |= ~jnp.all(jnp.isfinite(output.all_hidden_states), axis=(0, -1))
    if output.logits is not None:
        logits = output.logits
        broken = jnp.any(jnp.isnan(logits) | (logits == jnp.inf), axis=-1)
        no_mass = ~jnp.any(jnp.isfinite(logits), axis=-1)
        bad_BxT |= broken | no_mass
    return jnp.sum((bad_BxT & real_BxT).astype(jnp.float32))


def language_modelling_loss(trainable, micro_batch, spec: StepSpec, frozen=None, dropout_rng=None) -> Array:
    """The student's summed cross-entropy on the micro-batch's unlabelled-text rows (every target token)."""
    student = student_model(spec.student_graphdef, trainable, frozen)
    if dropout_rng is not None:
        model_lora.set_dropout_keys(student, jax.random.fold_in(dropout_rng, 2))
    with_logits = spec.method.student_call.get("return_logits", True)
    out = student(micro_batch["lm_input_ids"], micro_batch["lm_attention_mask"], return_logits=with_logits)
    rows = {"targets": micro_batch["lm_targets"], "loss_mask": micro_batch["lm_loss_mask"]}
    return summed_response_cross_entropy(ModelView(out, student), rows)


def summed_response_cross_entropy(student: ModelView, batch: Mapping[str, Array]) -> Array:
    """The student's cross-entropy on the batch's target tokens, summed over the response tokens.

    From the logits when the forward returned them, else in token chunks from
    the last hidden states and the LM head (the fused path, no full logits).
    """
    if student.output.logits is not None:
        ce_BxT = losses.token_cross_entropy(student.output.logits, batch["targets"])
        return losses.token_mean(ce_BxT, batch["loss_mask"], normalizer=1.0)
    return losses.fused_cross_entropy(
        student.output.hidden_states, student.model.lm_head_weight(), batch["targets"], batch["loss_mask"],
        normalizer=1.0, logit_softcap=getattr(student.model.config, "final_logit_softcap", None),
    )


def train_step(state: TrainState, teacher_params, batch: Mapping[str, Array], spec: StepSpec):
    """One optimizer step on a global batch. Returns ``(new_state, metrics)``.

    Under a context mesh with Explicit axes (``jax.set_mesh``) the step runs
    inside ``jax.sharding.auto_axes`` (the models are written for GSPMD
    propagation); the new state keeps the input state's shardings.
    """
    if _explicit_context():
        out_specs = (_explicit_specs(state), P())
        return jax.sharding.auto_axes(
            lambda *args: _train_step(*args, spec), out_sharding=out_specs
        )(state, teacher_params, batch)
    return _train_step(state, teacher_params, batch, spec)


def _explicit_context() -> bool:
    """Is the context mesh (``jax.set_mesh``) one with Explicit axes?"""
    mesh = jax.sharding.get_abstract_mesh()
    return not mesh.empty and jax.sharding.AxisType.Explicit in mesh.axis_types


def _explicit_specs(tree):
    """Each leaf's ``PartitionSpec`` as its (Explicit) type carries it."""
    return jax.tree.map(lambda x: jax.typeof(x).sharding.spec, tree)


def _train_step(state: TrainState, teacher_params, batch: Mapping[str, Array], spec: StepSpec):
    teacher_params = spec.teacher_source.step_params(state, teacher_params)
    num_tokens, num_sequences, teacher_tokens = _counts(batch)
    rng, step_rng = jax.random.split(jax.random.wrap_key_data(state.rng))
    ctx = StepContext(
        progress=state.step.astype(jnp.float32) / max(spec.total_steps, 1),
        num_tokens=jnp.maximum(num_tokens, 1.0),
        num_sequences=jnp.maximum(num_sequences, 1.0),
        teacher_num_tokens=jnp.maximum(teacher_tokens, 1.0),
        rng=jax.random.key_data(step_rng),
    )
    lm_num_tokens = jnp.maximum(jnp.sum(batch["lm_loss_mask"]), 1.0) if LM_KEYS[0] in batch else None
    micro_batches = _split_micro_batches(batch, spec.grad_accum, spec.mesh)
    grad_fn = jax.value_and_grad(forward_and_loss, has_aux=True)

    if spec.grad_accum == 1:
        # One micro-batch: no accumulation loop (a length-1 scan would keep
        # the whole forward/backward inside a while loop and add a zero pass
        # over the gradients).
        only = jax.tree.map(lambda x: x[0], micro_batches)
        (loss, metrics), grads = grad_fn(state.trainable, teacher_params, only, ctx, spec, lm_num_tokens,
                                         state.frozen)
    else:
        grads, loss, metrics = _accumulated(grad_fn, state, teacher_params, micro_batches, ctx, spec,
                                            lm_num_tokens)

    grad_norm = optax.tree.norm(grads)
    teacher_finite = metrics.pop(TEACHER_NONFINITE, jnp.zeros((), jnp.float32)) == 0
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & teacher_finite
    updates, new_opt_state = spec.optimizer.update(grads, state.opt_state, state.trainable)
    new_trainable = optax.apply_updates(state.trainable, updates)
    keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
    new_ema = spec.teacher_source.updated_ema(state.ema, new_trainable["student"], keep)
    new_state = TrainState(
        step=state.step + 1,  # every step counts, updated or skipped
        trainable=jax.tree.map(keep, new_trainable, state.trainable),
        opt_state=jax.tree.map(keep, new_opt_state, state.opt_state),
        rng=jax.random.key_data(rng),
        bad_steps_in_a_row=jnp.where(finite, 0, state.bad_steps_in_a_row + 1),
        bad_steps_total=state.bad_steps_total + (~finite).astype(jnp.int32),
        bad_teacher_steps_total=state.bad_teacher_steps_total + (~teacher_finite).astype(jnp.int32),
        ema=new_ema,
        frozen=state.frozen,
    )
    out = {"loss": loss, "grad_norm": grad_norm, "finite": finite, "teacher_finite": teacher_finite,
           "response_tokens": num_tokens, **metrics}
    return new_state, out


def _accumulated(grad_fn, state, teacher_params, micro_batches, ctx, spec, lm_num_tokens):
    """Summed gradients, loss and metrics over the leading micro-batch axis (a ``lax.scan``)."""
    def accumulate(carry, micro_batch):
        grads_acc, loss_acc, metrics_acc = carry
        (loss, metrics), grads = grad_fn(state.trainable, teacher_params, micro_batch, ctx, spec, lm_num_tokens,
                                         state.frozen)
        grads_acc = jax.tree.map(jnp.add, grads_acc, grads)
        metrics_acc = jax.tree.map(jnp.add, metrics_acc, metrics)
        return (grads_acc, loss_acc + loss, metrics_acc), None

    zero_grads = jax.tree.map(jnp.zeros_like, state.trainable)
    first = jax.tree.map(lambda x: x[0], micro_batches)
    metric_shapes = jax.eval_shape(
        lambda: forward_and_loss(state.trainable, teacher_params, first, ctx, spec, lm_num_tokens, state.frozen)[1]
    )
    zero_metrics = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)
    (grads, loss, metrics), _ = jax.lax.scan(
        accumulate, (zero_grads, jnp.zeros((), jnp.float32), zero_metrics), micro_batches
    )
    return grads, loss, metrics


def eval_step(trainable, teacher_params, batch: Mapping[str, Array], spec: StepSpec, frozen=None):
    """Summed (not averaged) method loss and metrics over a batch, plus its token count.

    ``student_ce`` is the student's cross-entropy on the reference response
    tokens (summed), whatever the method's loss: the held-out signal every
    method shares (an on-policy schedule may read it). Runs inside
    ``auto_axes`` under Explicit mesh axes, as :func:`train_step`.
    ``frozen``: the LoRA bases (``state.frozen``); no dropout.
    """
    if _explicit_context():
        return jax.sharding.auto_axes(lambda t, te, b, fr: _eval_step(t, te, b, spec, fr), out_sharding=P())(
            trainable, teacher_params, batch, frozen
        )
    return _eval_step(trainable, teacher_params, batch, spec, frozen)


def _eval_step(trainable, teacher_params, batch: Mapping[str, Array], spec: StepSpec, frozen=None):
    num_tokens, num_sequences, teacher_tokens = _counts(batch)
    one = jnp.ones((), jnp.float32)
    ctx = StepContext(
        progress=one, num_tokens=one, num_sequences=one, teacher_num_tokens=one,
        rng=jax.random.key_data(jax.random.key(0)),
    )
    student_view, teacher_view = model_views(trainable, teacher_params, batch, spec, frozen)
    eval_loss = spec.method.eval_loss or spec.method.loss
    loss, metrics = eval_loss(trainable["method"], batch, student_view, teacher_view, ctx)
    student_ce = summed_response_cross_entropy(student_view, batch)
    return {"loss": loss, "response_tokens": num_tokens, "sequences": num_sequences, "student_ce": student_ce,
            **metrics}


def state_shardings(state: TrainState, mesh: Mesh) -> TrainState:
    """Shardings for every leaf of ``state``: student (and trained or EMA teacher)
    parameters and LoRA bases by the model rules, optimizer moments like the parameters they
    track, everything else replicated."""
    replicated = NamedSharding(mesh, P())
    student = model_sharding.state_shardings(state.trainable["student"], mesh)
    method = jax.tree.map(lambda _: replicated, state.trainable["method"])
    trainable_shardings = {"student": student, "method": method}
    if "teacher" in state.trainable:
        trainable_shardings["teacher"] = model_sharding.state_shardings(state.trainable["teacher"], mesh)
    opt_state = _mirror_param_shardings(state.opt_state, state.trainable, trainable_shardings, replicated)
    ema = None if state.ema is None else model_sharding.state_shardings(state.ema, mesh)
    frozen = None if state.frozen is None else {
        name: model_sharding.state_shardings(base, mesh) for name, base in state.frozen.items()}
    return TrainState(
        step=replicated,
        trainable=trainable_shardings,
        opt_state=opt_state,
        rng=replicated,
        bad_steps_in_a_row=replicated,
        bad_steps_total=replicated,
        bad_teacher_steps_total=replicated,
        ema=ema,
        frozen=frozen,
    )


def _mirror_param_shardings(opt_state, trainable, trainable_shardings, default):
    """Gives each optimizer-state leaf the sharding of the parameter it tracks.

    Optax keeps moments in trees shaped like the parameters, nested under its
    own keys (``.../mu/student/blocks/attn/q_proj/kernel``); a leaf whose key
    path ends with a parameter's path and has its shape takes that
    parameter's sharding. Counters and other leaves are replicated.
    """
    params = flatten_with_param_paths(trainable)
    shardings = flatten_with_param_paths(trainable_shardings)
    by_path = sorted(((path, params[path].shape, shardings[path]) for path in params), key=lambda t: -len(t[0]))

    def pick(path, leaf):
        shape = tuple(getattr(leaf, "shape", ()))
        for param_path, param_shape, sharding in by_path:
            if (path == param_path or path.endswith("/" + param_path)) and tuple(param_shape) == shape:
                return sharding
        return default

    return map_with_param_path(pick, opt_state)
