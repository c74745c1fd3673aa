"""``train.xla_options``: parsing, the per-platform defaults, and a step that computes the same numbers."""

import functools
import logging

import jax
import numpy as np
import pytest
from flax import nnx

from jdistill import models
from jdistill.engine import compiler_options, config_checks
from jdistill.engine import train_step as ts
from jdistill.engine.defaults import base_config
from jdistill.engine.optimizer import make_optimizer
from jdistill.engine.run_setup import ConfigError
from jdistill.methods import ModelFacts, make_method

REGION = "xla_cpu_copy_insertion_use_region_analysis"


def test_parse_converts_booleans_and_numbers():
    assert compiler_options.parse("a=true, b=False,c=4,d=0.5,e=fast") == {
        "a": True, "b": False, "c": 4, "d": 0.5, "e": "fast"}
    assert compiler_options.parse("") == {}


@pytest.mark.parametrize("bad", ["a", "=true", "a=", "a=1,b"])
def test_a_malformed_entry_is_refused(bad):
    with pytest.raises(ValueError, match="is not key=value"):
        compiler_options.parse(bad)


def test_the_config_check_names_the_key():
    config = base_config("kd")
    config.train.xla_options = "xla_cpu_copy_insertion_use_region_analysis"
    with pytest.raises(ConfigError, match="train.xla_options entry .* is not key=value"):
        config_checks.validate_config(config, check_paths=False)


def test_auto_gives_the_platform_defaults():
    assert compiler_options.step_compiler_options("auto", "cpu") == {REGION: True}
    assert compiler_options.step_compiler_options("auto", "tpu") == {}
    assert compiler_options.step_compiler_options("none", "cpu") == {}
    assert compiler_options.step_compiler_options(f"{REGION}=false", "cpu") == {REGION: False}


def test_an_option_this_jaxlib_lacks_is_left_out_with_a_warning(monkeypatch, caplog):
    monkeypatch.setitem(compiler_options.PLATFORM_DEFAULTS, "cpu",
                        {REGION: True, "xla_cpu_option_that_does_not_exist": True})
    with caplog.at_level(logging.WARNING):
        assert compiler_options.step_compiler_options("auto", "cpu") == {REGION: True}
    assert "xla_cpu_option_that_does_not_exist=True is not supported" in caplog.text


V, B, T = 64, 4, 12


@functools.lru_cache(maxsize=None)
def _setup():
    def config(hidden):
        return models.DecoderConfig(model_type="llama", vocab_size=V, hidden_size=hidden, num_layers=3, num_heads=4,
                                    num_kv_heads=2, head_dim=hidden // 4, mlp_dim=2 * hidden, init_std=0.1)

    method = make_method(base_config("kd").method, ModelFacts(vocab_size=V, teacher_vocab_size=V,
                                                              teacher_checkpoint=True))
    student_graphdef, student_params = nnx.split(models.create_model(config(32), rngs=1))
    teacher_graphdef, teacher_params = nnx.split(models.create_model(config(48), rngs=2))
    rng = np.random.default_rng(0)
    ids = rng.integers(1, V, (B, T)).astype(np.int32)
    batch = {"input_ids": ids, "attention_mask": np.ones((B, T), np.int32), "targets": np.roll(ids, -1, axis=1),
             "loss_mask": np.tile((np.arange(T) > 3).astype(np.int32), (B, 1))}
    return method, student_graphdef, student_params, teacher_graphdef, teacher_params, batch


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_the_step_computes_the_same_numbers_with_the_cpu_defaults(grad_accum):
    method, sg, sp, tg, tp, batch = _setup()
    optimizer = make_optimizer(base_config("kd").optimizer, 10)
    spec = ts.StepSpec(method=method, optimizer=optimizer, student_graphdef=sg, teacher_graphdef=tg,
                       grad_accum=grad_accum, total_steps=10)
    results = []
    for options in ({}, compiler_options.step_compiler_options("auto", "cpu")):
        step = jax.jit(functools.partial(ts.train_step, spec=spec), compiler_options=options)
        state = ts.init_train_state(sp, {}, optimizer, seed=0)
        for _ in range(3):
            state, metrics = step(state, tp, batch)
        results.append(jax.device_get((state.trainable, metrics["loss"])))
    assert results[1][1] > 0
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-6)
    for got, want in zip(jax.tree.leaves(results[1][0]), jax.tree.leaves(results[0][0]), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
