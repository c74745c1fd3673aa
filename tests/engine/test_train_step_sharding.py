"""The train and eval steps on a (data, fsdp, tensor) mesh with Auto and with Explicit axes.

One step of KD (logits path and fused path) with two micro-batches on the 8
CPU devices, under ``jax.set_mesh``, equals the same step on one device; under
Explicit axes the new state keeps the shardings of the state it was given.
"""

import functools

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType

from jdistill import models
from jdistill.engine import train_step as ts
from jdistill.engine.defaults import base_config
from jdistill.engine.optimizer import make_optimizer
from jdistill.methods import ModelFacts, make_method

V, B, T = 64, 8, 12


def _config(hidden):
    return models.DecoderConfig(
        model_type="llama", vocab_size=V, hidden_size=hidden, num_layers=2, num_heads=4, num_kv_heads=2,
        head_dim=hidden // 4, mlp_dim=2 * hidden, init_std=0.1,
    )


@functools.lru_cache(maxsize=None)
def _setup(fused: str):
    config = base_config("kd")
    config.method.fused = fused
    method = make_method(config.method, ModelFacts(vocab_size=V, teacher_vocab_size=V, teacher_checkpoint=True))
    student_graphdef, student_params = nnx.split(models.create_model(_config(32), rngs=1))
    teacher_graphdef, teacher_params = nnx.split(models.create_model(_config(48), rngs=2))
    optimizer = make_optimizer(config.optimizer, 10)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, V, (B, T)).astype(np.int32)
    mask = np.ones((B, T), np.int32)
    mask[1, :3] = 0  # left padding
    mask[2, 9:] = 0  # right padding
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "targets": np.roll(ids, -1, axis=1),
        "loss_mask": (mask * (np.arange(T) > 4)).astype(np.int32),
    }
    return method, optimizer, student_graphdef, student_params, teacher_graphdef, teacher_params, batch


def _run(fused: str, mesh):
    method, optimizer, sg, sp, tg, tp, batch = _setup(fused)
    spec = ts.StepSpec(method=method, optimizer=optimizer, student_graphdef=sg, teacher_graphdef=tg, grad_accum=2,
                       total_steps=10, mesh=mesh)
    state = ts.init_train_state(sp, {}, optimizer, seed=0, teacher=spec.teacher_source)
    step = jax.jit(functools.partial(ts.train_step, spec=spec))
    evaluate = jax.jit(functools.partial(ts.eval_step, spec=spec))
    if mesh is None:
        return state, step(state, tp, batch), evaluate(state.trainable, tp, batch)
    with jax.set_mesh(mesh):
        state = jax.device_put(state, ts.state_shardings(state, mesh))
        tp = jax.device_put(tp, models.state_shardings(tp, mesh))
        batch = {k: jax.device_put(v, models.batch_sharding(mesh, v.ndim)) for k, v in batch.items()}
        return state, step(state, tp, batch), evaluate(state.trainable, tp, batch)


@functools.lru_cache(maxsize=None)
def _single_device(fused: str):
    _, (state, metrics), eval_metrics = _run(fused, None)
    return jax.device_get((state, metrics, eval_metrics))


@pytest.mark.parametrize(
    "axis_type,fused",
    [(AxisType.Auto, "off"), (AxisType.Explicit, "off"), (AxisType.Explicit, "on")],
    ids=["auto-logits", "explicit-logits", "explicit-fused"],
)
def test_step_on_mesh_equals_single_device(axis_type, fused):
    mesh = models.make_mesh(data=2, fsdp=2, tensor=2, axis_type=axis_type)
    assert mesh.axis_types == (axis_type,) * 3
    state_in, (state, metrics), eval_metrics = _run(fused, mesh)
    want_state, want_metrics, want_eval = _single_device(fused)
    assert float(metrics["loss"]) > 0
    np.testing.assert_allclose(metrics["loss"], want_metrics["loss"], rtol=1e-5)
    np.testing.assert_allclose(eval_metrics["loss"], want_eval["loss"], rtol=1e-5)
    for got, want in zip(jax.tree.leaves(state.trainable), jax.tree.leaves(want_state.trainable), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    if axis_type == AxisType.Explicit:
        for new, old in zip(jax.tree.leaves(state), jax.tree.leaves(state_in), strict=True):
            assert new.sharding.is_equivalent_to(old.sharding, new.ndim)
