"""``teacher.layers``: which runs take the per-layer teacher, and a run that is the same either way."""

import jax
import numpy as np
import pytest

from jdistill.engine import teacher_layout, trainer
from jdistill.engine.defaults import base_config
from jdistill.engine.run_setup import ConfigError
from jdistill.engine.teacher_source import teacher_source
from jdistill.methods import ModelFacts, make_method
from tests.engine import tiny_setup

FACTS = ModelFacts(vocab_size=64, teacher_vocab_size=64, teacher_checkpoint=True)


def _decide(name, setting, platform="cpu", lora=False):
    method = make_method(base_config(name).method, FACTS)
    return teacher_layout.use_per_layer(setting, method, teacher_source(method), lora, platform)


def test_auto_takes_per_layer_on_cpu_for_an_off_policy_frozen_teacher():
    assert _decide("kd", "auto") is True
    assert _decide("kd", "auto", platform="tpu") is False
    assert _decide("kd", "per_layer", platform="gpu") is True
    assert _decide("kd", "stacked") is False
    assert _decide("kd", "auto", lora=True) is False  # LoRA teacher
    assert _decide("gkd", "auto") is False  # its feed samples with the loaded teacher
    assert _decide("feature_kd", "auto") is False  # reads every layer's hidden states


@pytest.mark.parametrize("name, why", [
    ("gkd", "method gkd's data feed generates with the loaded teacher"),
    ("feature_kd", "method feature_kd reads the teacher's per-layer outputs"),
    ("online_kd", "its teacher is not a frozen loaded checkpoint"),
])
def test_per_layer_where_it_cannot_be_says_why(name, why):
    with pytest.raises(ConfigError, match=f"teacher.layers='per_layer' is not possible here: {why}"):
        _decide(name, "per_layer")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_setup.make_setup(tmp_path_factory.mktemp("setup"))


def test_a_run_with_the_per_layer_teacher_equals_the_stacked_one(setup, tmp_path):
    common = {"train.steps": 3, "eval.generate": False, "train.export_hf": False, "mesh.data": 2, "mesh.tensor": 4}
    results = {layers: trainer.run(tiny_setup.tiny_config(setup, "kd", **common, **{"teacher.layers": layers}),
                                   str(tmp_path / layers))
               for layers in ("stacked", "per_layer")}
    per_layer, stacked = (jax.device_get(results[k].state.trainable) for k in ("per_layer", "stacked"))
    for got, want in zip(jax.tree.leaves(per_layer), jax.tree.leaves(stacked), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    losses = [results[k].final_eval["loss"] for k in ("per_layer", "stacked")]
    assert losses[0] > 0
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
