"""The training loop: config → batches → jitted step → checkpoints, metrics, report, HF export.

:func:`run` is three steps: :func:`setup` builds everything a run needs from
the (read-only) config — the method, models, data, train state, step
function, checkpointer and the method's data feed — into a :class:`Run`;
:func:`train` runs the steps; :func:`finish` evaluates, exports and writes
the report. The engine knows no method by name: it asks the method (its
loss, its hooks, its feed) and its :mod:`teacher source
<jdistill.engine.teacher_source>`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any

import jax
import ml_collections
from flax import nnx

from jdistill import console, models, rollout, sampling
from jdistill.data.batching import DataPosition
from jdistill.engine import compiler_options, config_checks, config_help, evaluation, run_record, run_setup
from jdistill.engine import report as report_lib
from jdistill.engine import teacher_costs as teacher_costs_lib
from jdistill.engine import teacher_layout
from jdistill.engine import wandb_logger
from jdistill.engine.checkpointing import Checkpointer
from jdistill.engine.metrics_writer import MetricsWriter
from jdistill.engine.optimizer import make_optimizer
from jdistill.engine.run_health import NonFiniteLossError, RunHealth, check_finite_weights
from jdistill.engine.teacher_source import TeacherSource, teacher_source
from jdistill.engine.train_step import (StepSpec, TrainState, eval_step, frozen_part, init_train_state,
                                        state_shardings, student_model, train_step)
from jdistill.models import lora as model_lora
from jdistill.engine.workdir_lock import WorkdirLock
from jdistill.methods import Method, make_method

__all__ = ["NonFiniteLossError", "Run", "RunResult", "abort", "evaluate", "export", "finish", "make_feed", "run",
           "setup", "train"]


@dataclasses.dataclass
class RunResult:
    """What :func:`run` returns: the final state and metrics, and where things were written."""

    state: TrainState
    final_eval: dict
    workdir: str
    steps: int
    skipped_steps: int
    student_graphdef: Any = None

    @property
    def updates(self) -> int:
        """Steps whose update was applied (``steps`` counts the skipped ones too)."""
        return self.steps - self.skipped_steps

    def student(self):
        """The trained student as a :class:`jdistill.models.Decoder` (with its LoRA adapters, if any)."""
        return student_model(self.student_graphdef, self.state.trainable, self.state.frozen)

    def with_full_student(self) -> "RunResult":
        """This result with ``state.trainable['student']`` holding every student weight (a LoRA base's too),
        for code that merges ``student_graphdef`` with it alone."""
        base = frozen_part(self.state.frozen, "student")
        if base is None:
            return self
        full = nnx.merge_state(base, self.state.trainable["student"])
        state = dataclasses.replace(self.state, trainable={**self.state.trainable, "student": full})
        return dataclasses.replace(self, state=state)


@dataclasses.dataclass
class Run:
    """Everything a run holds between :func:`setup` and :func:`finish`."""

    config: ml_collections.ConfigDict
    workdir: str
    method: Method
    teacher: TeacherSource
    loaded: run_setup.Models
    data: run_setup.Data
    mesh: Any
    total: int
    spec: StepSpec
    state: TrainState
    shardings: Any
    teacher_params: Any  # the loaded frozen teacher's parameters (None otherwise)
    teacher_shardings: Any
    checkpointer: Checkpointer
    position: DataPosition
    resumed: bool
    writer: MetricsWriter
    feed: Any
    health: RunHealth
    lock: WorkdirLock | None = None
    step_fns: dict = dataclasses.field(default_factory=dict)
    config_changes: dict = dataclasses.field(default_factory=dict)  # fields changed on resume (allow_config_change)
    loss_terms_recorded: bool = False
    teacher_costs: dict = dataclasses.field(default_factory=dict)  # several teachers: memory, FLOPs, time per step

    @property
    def step_now(self) -> int:
        return int(jax.device_get(self.state.step))

    def student(self):
        return student_model(self.spec.student_graphdef, self.state.trainable, self.state.frozen)

    def metadata(self) -> dict:
        return {"method": self.method.name, "total_steps": self.total, "on_policy": self.feed.state_dict(),
                "health": self.health.state_dict()}


# Train-step metrics that are the engine's own, not terms of the method's loss.
_STEP_BOOKKEEPING = ("loss", "grad_norm", "finite", "teacher_finite", "response_tokens")


def _put_batch(batch: dict, mesh) -> dict:
    """Host numpy batch (the global batch, identical on every process) → global sharded arrays."""
    out = {}
    for key, value in batch.items():
        sharding = models.batch_sharding(mesh, value.ndim)
        rows = value.shape[0] // jax.process_count()
        local = value[jax.process_index() * rows : (jax.process_index() + 1) * rows]
        out[key] = jax.make_array_from_process_local_data(sharding, local, value.shape)
    return out


def _batch_shardings(batch: dict, mesh) -> dict:
    return {key: models.batch_sharding(mesh, value.ndim) for key, value in batch.items()}


def setup(config: ml_collections.ConfigDict, workdir: str) -> Run:
    """Reads the config once and builds the run (resuming the state from ``workdir`` when it holds a checkpoint).

    The config is checked before anything is loaded (:mod:`~jdistill.engine.config_checks`),
    and the workdir is locked for the run (:mod:`~jdistill.engine.workdir_lock`).
    """
    config_checks.validate_config(config)
    run_setup.maybe_initialize_distributed(config)
    os.makedirs(workdir, exist_ok=True)
    lock = WorkdirLock(workdir).acquire() if jax.process_index() == 0 else None
    try:
        return _setup(config, workdir, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _setup(config: ml_collections.ConfigDict, workdir: str, lock: WorkdirLock | None) -> Run:
    mesh = models.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    run_setup.validate(config, run_setup.num_batch_shards(mesh))
    checkpoint_dir = config.train.checkpoint_dir or os.path.join(workdir, "checkpoints")
    # The saved config (workdir/config.json) and, on a resume, the check that it is unchanged: before any loading.
    config_changes = run_record.check_and_save(config, workdir, resume_step=run_record.checkpoint_step(checkpoint_dir))
    if config.logging.wandb:
        wandb_logger.require()  # a missing package is reported now, not after the models are loaded
    student_tokenizer = run_setup.load_student_tokenizer(config)
    method = make_method(config.method, run_setup.model_facts(config, student_tokenizer))
    teacher = teacher_source(method)
    console.info(f"method {method.name}; mesh {dict(mesh.shape)} over {jax.device_count()} {jax.devices()[0].platform} devices")

    spec_of_data = method.prepare(config, workdir) if method.prepare is not None else None
    loaded = run_setup.load_models(config, method, mesh, student_tokenizer)
    data = run_setup.build_data(config, method, loaded, workdir, spec_of_data,
                                row_multiple=int(config.train.grad_accum) * run_setup.num_batch_shards(mesh))
    for key, value in data.report.items():
        console.info(f"data: {key}: {value}")
    total = run_setup.total_steps(config, data.train)

    optimizer = make_optimizer(config.optimizer, total, train_teacher=teacher.trained)
    # With LoRA the trainable parameters are the adapters; the frozen bases go to state.frozen.
    student_graphdef, student_params, student_base = _split_model(loaded.student)
    teacher_graphdef = teacher_params = teacher_base = None
    if loaded.teacher is not None:
        teacher_graphdef, teacher_params, teacher_base = _split_model(loaded.teacher)
    frozen = {name: base for name, base in (("student", student_base), ("teacher", teacher_base)) if base is not None}
    extra_graphdefs: tuple = ()
    if loaded.teacher is not None and method.teacher_list:  # several frozen teachers: a tuple of parameters
        extra = [nnx.split(t) for t in loaded.extra_teachers]
        extra_graphdefs = tuple(graphdef for graphdef, _ in extra)
        teacher_params = (teacher_params, *(params for _, params in extra))
    method_params = {}
    if method.init_params is not None:
        method_params = method.init_params(jax.random.key(config.train.seed + 1), loaded.student, loaded.teacher)

    make_state = functools.partial(init_train_state, optimizer=optimizer, seed=config.train.seed, teacher=teacher)
    abstract_state = jax.eval_shape(make_state, student_params, method_params, loaded_teacher=teacher_params,
                                    frozen=frozen)
    shardings = state_shardings(abstract_state, mesh)
    no_frozen = dataclasses.replace(shardings, frozen=None)
    state = jax.jit(make_state, out_shardings=no_frozen)(student_params, method_params, loaded_teacher=teacher_params)
    if frozen:  # placed as loaded, not copied through the jit
        state = dataclasses.replace(state, frozen=jax.device_put(frozen, shardings.frozen))
    if teacher.trained:
        teacher_params = loaded.teacher = None  # the state holds the trained teacher now
    teacher_shardings = None
    if teacher_params is not None:
        teacher_shardings = (tuple(models.state_shardings(p, mesh) for p in teacher_params) if method.teacher_list
                             else models.state_shardings(teacher_params, mesh))

    spec = StepSpec(
        method=method, optimizer=optimizer, student_graphdef=student_graphdef,
        teacher_graphdef=teacher.graphdef(student_graphdef, teacher_graphdef),
        grad_accum=int(config.train.grad_accum), total_steps=total, mesh=mesh,
        lm_coef=float(config.data.lm_coef) if data.lm is not None else 0.0, teacher=teacher,
        extra_teacher_graphdefs=extra_graphdefs,
        teacher_prefixes=run_setup.teacher_prefixes(method, loaded) if method.teacher_list else (),
    )
    costs = _teacher_costs(config, spec, teacher_params, data, mesh) if method.teacher_list and teacher_params else {}
    for key, value in costs.items():
        console.info(f"{key}: {value}")
    checkpointer = Checkpointer(checkpoint_dir, keep=config.train.keep_checkpoints)
    position = DataPosition()
    latest = None
    restored: dict = {}
    intact = checkpointer.restore_latest(state)  # the newest intact checkpoint (damaged ones are moved aside)
    if intact is not None:
        latest, state, position, restored = intact
        done = " (the run had finished: evaluating and exporting again)" if latest >= total else ""
        console.info(f"resumed from step {latest} (epoch {position.epoch}, batch {position.step_in_epoch}){done}")
    health = RunHealth.from_config(config.train, total, restored.get("health"))
    # Records an interrupted run wrote after its last checkpoint are superseded (a fresh run supersedes all).
    writer = MetricsWriter(workdir, tensorboard=config.logging.tensorboard,
                           resumed_from=latest if latest is not None else -1,
                           finished=latest is not None and latest >= total,
                           config_text=config_help.render(config, plain=True),
                           wandb=_wandb(config, workdir, resumed=latest is not None))
    if config_changes:
        console.warn(f"resuming with a changed config (train.allow_config_change): "
                     f"{run_record.describe_changes(config_changes)}")
        writer.write_event(latest if latest is not None else 0, "config_change", {"changed": config_changes})
    feed = make_feed(config, method, loaded, data, mesh, writer, workdir, student_graphdef, total,
                     restored=restored.get("on_policy"), resume_position=position if latest is not None else None)
    if teacher_params is not None and teacher_layout.use_per_layer(config.teacher.layers, method, teacher,
                                                                   teacher_base is not None):
        teacher_params, teacher_shardings = teacher_layout.to_per_layer(
            teacher_params, teacher_shardings, loaded.teacher.config.num_layers)
        loaded.teacher = None  # frees the stacked arrays: the step reads the per-layer copy only
        console.info(f"teacher: per-layer block weights in the step (teacher.layers={config.teacher.layers})")
    return Run(
        config=config, workdir=workdir, method=method, teacher=teacher, loaded=loaded, data=data, mesh=mesh,
        total=total, spec=spec, state=state, shardings=shardings, teacher_params=teacher_params,
        teacher_shardings=teacher_shardings, checkpointer=checkpointer, position=position,
        resumed=latest is not None, writer=writer, feed=feed, health=health, lock=lock, config_changes=config_changes,
        teacher_costs=costs,
    )


def _teacher_costs(config, spec: StepSpec, teacher_params, data, mesh) -> dict:
    """Each teacher's parameter memory and forward FLOPs and time per step (:mod:`~jdistill.engine.teacher_costs`)."""
    paths = [config.teacher.path] + [path for path, _ in run_setup.extra_teacher_paths(config)]
    batch = _put_batch(data.train.batch_at(DataPosition()), mesh)
    teachers = list(zip((spec.teacher_graphdef, *spec.extra_teacher_graphdefs), teacher_params))
    return teacher_costs_lib.teacher_costs(teachers, batch, spec.prefixes(), dict(spec.method.teacher_call), paths)


def _split_model(model):
    """``(graphdef, trainable params, frozen base)``: a LoRA model's adapters and base; else all and ``None``."""
    if model_lora.has_lora(model):
        return model_lora.split(model)
    graphdef, params = nnx.split(model)
    return graphdef, params, None


def _wandb(config, workdir: str, *, resumed: bool):
    """The W&B backend of process 0 when ``logging.wandb`` is on (:mod:`~jdistill.engine.wandb_logger`)."""
    if not config.logging.wandb or jax.process_index() != 0:
        return None
    return wandb_logger.WandbLogger(config.logging, workdir, run_record.plain(config), resumed=resumed)


def make_feed(config, method: Method, loaded, data, mesh, writer, workdir: str, student_graphdef, total: int, *,
              restored: dict | None, resume_position: DataPosition | None):
    """The method's feed of training data (:mod:`jdistill.rollout`): its own when it generates responses."""
    if method.make_feed is None:
        return rollout.Feed()
    if method.cross_vocabulary:
        raise rollout.OnPolicyConfigError(f"Method {method.name!r}: generated responses need one shared tokenizer.")
    teacher_stop = None
    if loaded.teacher is not None:
        tokenizer = loaded.teacher_tokenizer or loaded.student_tokenizer
        teacher_stop = sampling.stop_tokens(tokenizer, config.teacher.path, loaded.teacher.config)
    context = rollout.FeedContext(
        source=data.train, collate_kwargs=data.collate_kwargs, student_graphdef=student_graphdef,
        teacher=loaded.teacher,
        student_stop=sampling.stop_tokens(loaded.student_tokenizer, config.student.path, loaded.student.config),
        teacher_stop=teacher_stop, mesh=mesh, writer=writer, workdir=workdir, total_steps=total,
        seed=int(config.train.seed), max_len=int(config.data.max_len), max_prompt_len=int(config.data.max_prompt_len),
        show_progress=bool(config.logging.progress_bar) and jax.process_index() == 0,
        restored=restored, resume_position=resume_position,
    )
    return method.make_feed(context)


def _step_fn(run: Run, batch: dict):
    """The jitted step for a batch's keys and shapes (compiled once per bucket shape)."""
    key = tuple((k, v.shape) for k, v in sorted(batch.items()))
    if key not in run.step_fns:
        run.step_fns[key] = jax.jit(
            functools.partial(train_step, spec=run.spec),
            in_shardings=(run.shardings, run.teacher_shardings, _batch_shardings(batch, run.mesh)),
            out_shardings=(run.shardings, None),
            donate_argnums=0,
            compiler_options=compiler_options.step_compiler_options(run.config.train.xla_options),
        )
    return run.step_fns[key]


def evaluate(run: Run, step_now: int, *, generate: bool = True) -> tuple[dict, list]:
    """Validation loss (the method's ``eval_loss`` and the student's ``student_ce``) and, optionally, generation."""
    config = run.config
    eval_fn = run.step_fns.get("eval")
    if eval_fn is None:
        eval_fn = run.step_fns["eval"] = jax.jit(functools.partial(eval_step, spec=run.spec))
    metrics = evaluation.validation_loss(
        functools.partial(eval_fn, frozen=run.state.frozen), run.state.trainable, run.teacher.step_params(run.state, run.teacher_params),
        run.data.eval_examples, batch_size=config.eval.batch_size, collate_kwargs=run.data.collate_kwargs,
        put_batch=lambda b: _put_batch(b, run.mesh),
    )
    samples = []
    if generate and config.eval.generate:
        gen = evaluation.generation_metrics(
            run.student(), run.data.eval_examples, tokenizer=run.loaded.student_tokenizer, config=config.eval,
            batch_size=config.eval.batch_size, seed=config.train.seed, checkpoint_dir=config.student.path,
            mesh=run.mesh,
        )
        samples = gen.pop("samples")
        gen.pop("rougeL_per_example")
        metrics.update(gen)
    run.writer.write(step_now, metrics, split="eval")
    run.writer.write_samples(step_now, samples)
    console.info(f"eval @ step {step_now}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return metrics, samples


def train(run: Run, max_steps_this_run: int | None = None) -> int:
    """Runs the steps left (at most ``max_steps_this_run``), checkpointing on the way; returns the step reached."""
    config, total = run.config, run.total
    start_step = run.step_now
    steps_this_run = total - start_step if max_steps_this_run is None else min(total - start_step, max_steps_this_run)
    bar = None
    if config.logging.progress_bar and jax.process_index() == 0:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start_step, desc=f"{run.method.name}", unit="step", dynamic_ncols=True)
    window_tokens, window_start = 0, time.perf_counter()
    batches = run.data.train.iterate(run.position)
    step_now = start_step
    eval_every = run_setup.eval_interval(config, run.data.train)
    lr = make_lr(config, total)
    if not run.resumed and run.feed.evaluate_at_start:
        run.feed.after_eval(0, evaluate(run, 0, generate=False)[0])

    def consume(step_metrics):
        host, counters = jax.device_get((step_metrics, (
            run.state.bad_steps_in_a_row, run.state.bad_steps_total, run.state.bad_teacher_steps_total)))
        run.health.after_step(step_now, host, bad_in_a_row=int(counters[0]), bad_total=int(counters[1]),
                              bad_teacher_total=int(counters[2]))
        values = {k: float(v) for k, v in host.items()}
        values["updates"] = float(step_now - int(counters[1]))
        return values

    try:
        for _ in range(steps_this_run):
            batch_position, host_batch = next(batches)
            host_batch, feed_values = run.feed.batch(step_now, batch_position, host_batch, run.state)
            if run.data.lm is not None:
                host_batch = {**host_batch, **run.data.lm.batch(step_now)}
            batch = _put_batch(host_batch, run.mesh)
            run.state, metrics = _step_fn(run, batch)(run.state, run.teacher_params, batch)
            window_tokens += int(host_batch["attention_mask"].sum())
            run.position = run.data.train.advance(batch_position)
            step_now += 1
            values = {**consume(metrics), **feed_values}
            run.feed.after_step(batch_position, step_now, values)
            if not run.loss_terms_recorded:
                # The method's loss terms (its step metrics), named once per run for the report's curves.
                terms = [k for k in metrics if k not in _STEP_BOOKKEEPING]
                run.writer.write_event(step_now, report_lib.LOSS_TERMS_EVENT, {"names": terms})
                run.loss_terms_recorded = True
            if step_now % config.logging.every == 0 or step_now == total:
                elapsed = time.perf_counter() - window_start
                tokens_per_s = window_tokens / max(elapsed, 1e-9)
                window_tokens, window_start = 0, time.perf_counter()
                run.writer.write(step_now, {**values, "tokens_per_s": tokens_per_s,
                                            "learning_rate": float(lr(max(values["updates"] - 1, 0)))},
                             split="train")
                if bar is not None:
                    bar.set_postfix(loss=f"{values['loss']:.4f}", tok_s=f"{tokens_per_s:.0f}")
            if bar is not None:
                bar.update(1)
            if eval_every and step_now % eval_every == 0 and step_now != total:
                run.feed.after_eval(step_now, evaluate(run, step_now)[0])
            if config.train.checkpoint_every and step_now % config.train.checkpoint_every == 0:
                run.checkpointer.save(step_now, run.state, run.position, run.metadata())
            run.checkpointer.poll()  # a failed asynchronous save stops the run now, not one interval later
    finally:
        run.feed.finish(step_now)
        if bar is not None:
            bar.close()
    return step_now


def finish(run: Run, step_now: int) -> RunResult:
    """The last checkpoint; at the end of training the final evaluation, the HF export and the report."""
    config = run.config
    if run.checkpointer.latest_step() != step_now:
        run.checkpointer.save(step_now, run.state, run.position, run.metadata())
    run.checkpointer.wait()
    run.checkpointer.close()
    final_eval: dict = {}
    skipped, skipped_teacher = (int(v) for v in jax.device_get(
        (run.state.bad_steps_total, run.state.bad_teacher_steps_total)))
    if step_now >= run.total:
        final_eval, samples = evaluate(run, step_now)
        if config.train.export_hf:
            export(run)
        if jax.process_index() == 0:
            row = {"model": f"student ({run.method.name})", **final_eval}
            skipped_text = f"{skipped}" + (f" ({skipped_teacher} for non-finite teacher outputs)" if skipped_teacher
                                           else "")
            warnings = {"warnings": " / ".join(run.health.warnings)} if run.health.warnings else {}
            if run.config_changes:
                warnings["config changed on resume"] = run_record.describe_changes(run.config_changes)
            path = report_lib.write_report(
                run.workdir,
                title=f"jdistill run: {run.method.name}",
                summary={"steps": step_now, "updates": step_now - skipped, "skipped steps": skipped_text,
                         **warnings, **run.data.report, **run.teacher_costs},
                results=[row],
                samples=samples,
                references=report_lib.reference_runs(config.logging.reference_runs),
            )
            console.info(f"report written to {path}")
    run.writer.close()
    if run.lock is not None:
        run.lock.release()
    return RunResult(run.state, final_eval, run.workdir, step_now, skipped, run.spec.student_graphdef)


def export(run: Run) -> None:
    """The student (and a teacher that changed during training) as Hugging Face directories in the workdir.

    Weights that are not finite are never exported (:class:`~jdistill.engine.run_health.NonFiniteWeightsError`).
    """
    latest = run.checkpointer.latest_step()
    check_finite_weights(
        run.state.trainable["student"], "The trained student",
        f"It was not exported (the last checkpoint is step {latest} in {run.checkpointer.directory}). Lower "
        "optimizer.learning_rate or use student.compute_dtype=float32, and train again in a new --workdir.",
    )
    if run.teacher.exported:
        check_finite_weights(run.teacher.final_params(run.state), "The trained teacher",
                             "Nothing was exported. Lower optimizer.teacher_learning_rate and train again.")
    config = run.config
    _export_model(run.student(), run.workdir, "student", tokenizer=run.loaded.student_tokenizer,
                  lora=config.student.lora, dtype=config.student.param_dtype, base_path=config.student.path)
    if run.teacher.exported:
        teacher_final = model_lora.merge(run.spec.teacher_graphdef, run.teacher.final_params(run.state),
                                         run.teacher.frozen_base(run.state.frozen))
        tokenizer = run.loaded.teacher_tokenizer or run.loaded.student_tokenizer
        lora = config.teacher.lora if run.teacher.trained else config.student.lora  # an EMA teacher is the student's
        base_path = config.teacher.path if run.teacher.trained else config.student.path
        _export_model(teacher_final, run.workdir, "teacher", tokenizer=tokenizer, lora=lora, dtype="float32",
                      base_path=base_path, label=type(run.teacher).__name__)


def _export_model(model, workdir: str, name: str, *, tokenizer, lora, dtype, base_path: str, label: str = "") -> None:
    """``<name>_hf`` (a Hugging Face directory) and, for a LoRA model, as ``<name>.lora.export`` says:
    merged (``W + (alpha/r)·A B`` in ``<name>_hf``, stored in ``dtype``) and/or a PEFT adapter (``<name>_lora``)."""
    label = label or name
    if not model_lora.has_lora(model):
        out_dir = models.save_pretrained(model, os.path.join(workdir, f"{name}_hf"), tokenizer=tokenizer)
        console.info(f"{label} exported to {out_dir}")
        return
    if lora.export in ("merged", "both"):
        merged = model_lora.merged_model(model, dtype=dtype)
        out_dir = models.save_pretrained(merged, os.path.join(workdir, f"{name}_hf"), tokenizer=tokenizer, dtype=dtype)
        console.info(f"{label} exported to {out_dir} (LoRA merged into the weights)")
    if lora.export in ("adapter", "both"):
        try:
            out_dir = model_lora.save_peft_adapter(model, os.path.join(workdir, f"{name}_lora"),
                                                   base_model_name_or_path=base_path)
        except model_lora.LoraError as error:
            console.warn(f"{label}: no PEFT adapter directory: {error}")
            return
        if tokenizer is not None and hasattr(tokenizer, "save_pretrained") and jax.process_index() == 0:
            tokenizer.save_pretrained(str(out_dir))
        console.info(f"{label} LoRA adapter exported to {out_dir} (peft.PeftModel.from_pretrained(<{base_path}>, "
                     f"'{out_dir}'))")


def run(config: ml_collections.ConfigDict, workdir: str, *, max_steps_this_run: int | None = None) -> RunResult:
    """Trains as ``config`` says, resuming from ``workdir`` if it holds a checkpoint.

    Args:
      config: a config built from :func:`jdistill.engine.defaults.base_config`,
        with real paths (``demo:`` paths are resolved by the entry point:
        :func:`jdistill.demo.resolved`). It is read, never written.
      workdir: where checkpoints, metrics, the report and the exported student go.
      max_steps_this_run: stop (after checkpointing) once this many steps ran in
        this call, e.g. to fit a job into a time slot; the next call resumes.
    """
    config = ml_collections.FrozenConfigDict(config)
    current = setup(config, workdir)
    try:
        step_now = train(current, max_steps_this_run)
        return finish(current, step_now)
    except BaseException:
        abort(current)
        raise


def abort(run: Run) -> None:
    """After an error: the checkpoint save in flight is completed (or abandoned with a message), the lock released."""
    run.checkpointer.finish_or_abandon()
    run.writer.close()
    if run.lock is not None:
        run.lock.release()


def make_lr(config: ml_collections.ConfigDict, total: int):
    from jdistill.engine.optimizer import schedule

    return schedule(float(config.optimizer.learning_rate), config.optimizer, total)
