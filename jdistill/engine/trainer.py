"""The training loop: config → batches → jitted step → checkpoints, metrics, report, HF export."""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any

import jax
import ml_collections
from flax import nnx

from jdistill import demo, models
from jdistill.data.batching import DataPosition
from jdistill.engine import console, evaluation, on_policy, report as report_lib, run_setup
from jdistill.engine.checkpointing import Checkpointer
from jdistill.engine.metrics_writer import MetricsWriter
from jdistill.engine.optimizer import make_optimizer
from jdistill.engine.train_step import (
    StepSpec,
    TrainState,
    eval_step,
    frozen_teacher_params,
    init_train_state,
    state_shardings,
    train_step,
)
from jdistill.methods import make_method


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


@dataclasses.dataclass
class RunResult:
    """What :func:`run` returns: the final state and metrics, and where things were written."""

    state: TrainState
    final_eval: dict
    workdir: str
    steps: int
    skipped_steps: int
    student_graphdef: Any = None

    def student(self):
        """The trained student as a :class:`jdistill.models.Decoder`."""
        return nnx.merge(self.student_graphdef, self.state.trainable["student"])


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


def run(config: ml_collections.ConfigDict, workdir: str, *, max_steps_this_run: int | None = None) -> RunResult:
    """Trains as ``config`` says, resuming from ``workdir`` if it holds a checkpoint.

    Args:
      config: a config built from :func:`jdistill.engine.defaults.base_config`.
      workdir: where checkpoints, metrics, the report and the exported student go.
      max_steps_this_run: stop (after checkpointing) once this many steps ran in
        this call, e.g. to fit a job into a time slot; the next call resumes.
    """
    run_setup.maybe_initialize_distributed(config)
    if demo.uses_demo(config):
        demo.resolve(config)  # Builds the demo's data, tokenizers and models on first use.
    os.makedirs(workdir, exist_ok=True)
    mesh = models.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    run_setup.validate(config, run_setup.num_batch_shards(mesh))
    method = make_method(config.method)
    console.info(f"method {method.name}; mesh {dict(mesh.shape)} over {jax.device_count()} {jax.devices()[0].platform} devices")

    if method.prepare is not None:
        method.prepare(config, workdir)
    loaded = run_setup.load_models(config, method, mesh)
    method = make_method(config.method)  # Rebuilt: the vocabulary check may have set method.vocab_size.
    data = run_setup.build_data(config, method, loaded, workdir)
    for key, value in data.report.items():
        console.info(f"data: {key}: {value}")
    total = run_setup.total_steps(config, data.train)

    optimizer = make_optimizer(config.optimizer, total, train_teacher=method.teacher_mode == "trained")
    student_graphdef, student_params = nnx.split(loaded.student)
    teacher_graphdef = teacher_params = None
    if loaded.teacher is not None:
        teacher_graphdef, teacher_params = nnx.split(loaded.teacher)
    method_params = {}
    if method.init_params is not None:
        method_params = method.init_params(jax.random.key(config.train.seed + 1), loaded.student, loaded.teacher)

    # Online distillation trains the teacher inside the state; self-distillation's
    # EMA teacher is a copy of the student kept in the state.
    trained_teacher = teacher_params if method.teacher_mode == "trained" else None
    if method.teacher_mode == "ema":
        teacher_graphdef = student_graphdef
    make_state = functools.partial(
        init_train_state, optimizer=optimizer, seed=config.train.seed, ema=method.teacher_mode == "ema"
    )
    abstract_state = jax.eval_shape(make_state, student_params, method_params, teacher_params=trained_teacher)
    shardings = state_shardings(abstract_state, mesh)
    state = jax.jit(make_state, out_shardings=shardings)(student_params, method_params, teacher_params=trained_teacher)
    if trained_teacher is not None:
        teacher_params = trained_teacher = loaded.teacher = None  # the state holds the teacher now
    teacher_shardings = None if teacher_params is None else models.state_shardings(teacher_params, mesh)

    spec = StepSpec(
        method=method, optimizer=optimizer, student_graphdef=student_graphdef, teacher_graphdef=teacher_graphdef,
        grad_accum=int(config.train.grad_accum), total_steps=total, mesh=mesh,
        lm_coef=float(config.data.lm_coef) if data.lm is not None else 0.0,
    )
    checkpointer = Checkpointer(
        config.train.checkpoint_dir or os.path.join(workdir, "checkpoints"), keep=config.train.keep_checkpoints
    )
    position = DataPosition()
    latest = checkpointer.latest_step()
    restored: dict = {}
    if latest is not None:
        state, position, restored = checkpointer.restore(latest, state)
        console.info(f"resumed from step {latest} (epoch {position.epoch}, batch {position.step_in_epoch})")

    step_fns: dict[tuple, Any] = {}

    def step_fn(batch):
        key = tuple((k, v.shape) for k, v in sorted(batch.items()))
        if key not in step_fns:
            step_fns[key] = jax.jit(
                functools.partial(train_step, spec=spec),
                in_shardings=(shardings, teacher_shardings, _batch_shardings(batch, mesh)),
                out_shardings=(shardings, None),
                donate_argnums=0,
            )
        return step_fns[key]

    eval_fn = jax.jit(functools.partial(eval_step, spec=spec))
    writer = MetricsWriter(workdir, tensorboard=config.logging.tensorboard)
    metadata = {"method": method.name, "total_steps": total}
    # Generated (on-policy) training data, when the method's data_policy asks for it.
    feed = on_policy.make_feed(
        method, config, data=data, loaded=loaded, mesh=mesh, writer=writer, workdir=workdir,
        student_graphdef=student_graphdef, total_steps=total, restored=restored.get("on_policy"),
        resume_position=position if latest is not None else None,
    )

    def evaluate(step_now: int, *, generate: bool = True) -> tuple[dict, list]:
        metrics = evaluation.validation_loss(
            eval_fn, state.trainable, frozen_teacher_params(state, teacher_params, method), data.eval_examples,
            batch_size=config.eval.batch_size, collate_kwargs=data.collate_kwargs,
            put_batch=lambda b: _put_batch(b, mesh),
        )
        samples = []
        if generate and config.eval.generate:
            student_now = nnx.merge(student_graphdef, state.trainable["student"])
            gen = evaluation.generation_metrics(
                student_now, data.eval_examples, tokenizer=loaded.student_tokenizer, config=config.eval,
                batch_size=config.eval.batch_size, seed=config.train.seed, mesh=mesh,
            )
            samples = gen.pop("samples")
            metrics.update(gen)
        writer.write(step_now, metrics, split="eval")
        console.info(f"eval @ step {step_now}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return metrics, samples

    start_step = int(jax.device_get(state.step))
    steps_this_run = total - start_step if max_steps_this_run is None else min(total - start_step, max_steps_this_run)
    bar = None
    if config.logging.progress_bar and jax.process_index() == 0:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start_step, desc=f"{method.name}", unit="step", dynamic_ncols=True)
    window_tokens, window_start = 0, time.perf_counter()
    batches = data.train.iterate(position)
    step_now = start_step
    eval_every = run_setup.eval_interval(config, data.train)
    if latest is None and feed.evaluate_at_start:
        feed.after_eval(0, evaluate(0, generate=False)[0])

    def consume(step_metrics):
        host = jax.device_get(step_metrics)
        if not host["finite"]:
            console.info(f"step {step_now}: non-finite loss or gradient; update skipped")
        bad_in_a_row = int(jax.device_get(state.bad_steps_in_a_row))
        if bad_in_a_row >= config.train.max_bad_steps:
            raise NonFiniteLossError(
                f"{bad_in_a_row} consecutive steps had a non-finite loss or gradient (limit "
                f"train.max_bad_steps={config.train.max_bad_steps}). Lower optimizer.learning_rate, check the data, "
                "or use student.compute_dtype=float32."
            )
        return {k: float(v) for k, v in host.items()}

    try:
        for _ in range(steps_this_run):
            batch_position, host_batch = next(batches)
            host_batch, feed_values = feed.batch(step_now, batch_position, host_batch, state)
            if data.lm is not None:
                host_batch = {**host_batch, **data.lm.batch(step_now)}
            batch = _put_batch(host_batch, mesh)
            state, metrics = step_fn(batch)(state, teacher_params, batch)
            window_tokens += int(host_batch["attention_mask"].sum())
            position = data.train.advance(batch_position)
            step_now += 1
            values = {**consume(metrics), **feed_values}
            feed.after_step(batch_position, step_now, values)
            if step_now % config.logging.every == 0 or step_now == total:
                elapsed = time.perf_counter() - window_start
                tokens_per_s = window_tokens / max(elapsed, 1e-9)
                window_tokens, window_start = 0, time.perf_counter()
                lr = float(make_lr(config, total)(step_now - 1))
                writer.write(step_now, {**values, "tokens_per_s": tokens_per_s, "learning_rate": lr}, split="train")
                if bar is not None:
                    bar.set_postfix(loss=f"{values['loss']:.4f}", tok_s=f"{tokens_per_s:.0f}")
            if bar is not None:
                bar.update(1)
            if eval_every and step_now % eval_every == 0 and step_now != total:
                feed.after_eval(step_now, evaluate(step_now)[0])
            if config.train.checkpoint_every and step_now % config.train.checkpoint_every == 0:
                checkpointer.save(step_now, state, position, {**metadata, "on_policy": feed.state_dict()})
    finally:
        feed.finish(step_now)
        if bar is not None:
            bar.close()

    if checkpointer.latest_step() != step_now:
        checkpointer.save(step_now, state, position, {**metadata, "on_policy": feed.state_dict()})
    checkpointer.wait()
    checkpointer.close()
    finished = step_now >= total
    final_eval: dict = {}
    if finished:
        final_eval, samples = evaluate(step_now)
        if config.train.export_hf:
            student_final = nnx.merge(student_graphdef, state.trainable["student"])
            out_dir = models.save_pretrained(student_final, os.path.join(workdir, "student_hf"),
                                             tokenizer=loaded.student_tokenizer)
            console.info(f"student exported to {out_dir}")
            if method.teacher_mode in ("trained", "ema"):
                teacher_final = nnx.merge(teacher_graphdef, learned_teacher_params(state, method))
                teacher_tokenizer = loaded.teacher_tokenizer or loaded.student_tokenizer
                out_dir = models.save_pretrained(teacher_final, os.path.join(workdir, "teacher_hf"),
                                                 tokenizer=teacher_tokenizer)
                console.info(f"{method.teacher_mode} teacher exported to {out_dir}")
        if jax.process_index() == 0:
            row = {"model": f"student ({method.name})", **final_eval}
            path = report_lib.write_report(
                workdir,
                title=f"jdistill run: {method.name}",
                summary={"steps": step_now, "skipped steps": int(jax.device_get(state.bad_steps_total)),
                         **data.report},
                results=[row],
                samples=samples,
            )
            console.info(f"report written to {path}")
    writer.close()
    return RunResult(state, final_eval, workdir, step_now, int(jax.device_get(state.bad_steps_total)),
                     student_graphdef)


def learned_teacher_params(state: TrainState, method):
    """The teacher's parameters when they change during training (online: trained; self-distillation: EMA)."""
    return state.trainable["teacher"] if method.teacher_mode == "trained" else state.ema


def make_lr(config: ml_collections.ConfigDict, total: int):
    from jdistill.engine.optimizer import schedule

    return schedule(float(config.optimizer.learning_rate), config.optimizer, total)
