"""LoRA runs end to end: only adapters in the optimizer and the checkpoints, resume, exports, online KD.

Tiny local llama models on the 8-device CPU mesh (tests/engine/tiny_setup.py).
The exports are checked against transformers (the merged directory) and peft
(the adapter directory loaded onto the base checkpoint).
"""

import json
import os

import jax
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from jdistill import models
from jdistill.engine import run_setup, trainer
from jdistill.engine.run_setup import ConfigError
from jdistill.models.param_paths import flatten_with_param_paths
from tests.engine import tiny_setup

LORA = {"student.lora.rank": 4, "student.lora.alpha": 8.0, "optimizer.learning_rate": 1e-2,
        "optimizer.weight_decay": 0.0, "eval.generate": False}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_setup.make_setup(tmp_path_factory.mktemp("lora"))


def adam_moment_leaves(opt_state) -> dict:
    """``{path: leaf}`` of the array leaves of an optax state (moments and counters)."""
    return {path: leaf for path, leaf in flatten_with_param_paths(opt_state).items() if hasattr(leaf, "shape")}


@pytest.mark.slow
def test_lora_run_trains_only_adapters_and_resumes(setup, tmp_path):
    config = tiny_setup.tiny_config(setup, "kd", **{**LORA, "train.steps": 6, "train.checkpoint_every": 3})
    first = trainer.setup(config, str(tmp_path))
    try:
        student_leaves = flatten_with_param_paths(first.state.trainable["student"])
        # 7 projections per block (stacked), A and B each.
        assert len(student_leaves) == 14
        assert all(path.endswith(("lora_a", "lora_b")) for path in student_leaves)
        base = flatten_with_param_paths(first.state.frozen["student"])
        assert "blocks/attn/q_proj/kernel" in base and not any("lora" in p for p in base)
        # The optimizer's moments: two (mu, nu) per adapter leaf, nothing shaped like a base weight.
        moments = {p: x for p, x in adam_moment_leaves(first.state.opt_state).items() if x.ndim > 0}
        assert len(moments) == 2 * 14
        assert all(("lora_a" in p or "lora_b" in p) for p in moments)
        n_adapter = sum(x.size for x in student_leaves.values())
        assert sum(x.size for x in moments.values()) == 2 * n_adapter
        # B = 0 at the start: the LoRA student is the base model.
        ids = np.array([[5, 6, 7, 8]], np.int32)
        plain = models.load_pretrained(setup["student"], dtype="float32", compute_dtype="float32")
        np.testing.assert_allclose(np.asarray(first.student()(ids).logits), np.asarray(plain(ids).logits),
                                   atol=1e-6)
        trainer.train(first, 3)  # checkpoint_every=3 saves step 3
        first.checkpointer.wait()
        after_3 = jax.device_get(first.state.trainable["student"])
    finally:
        trainer.abort(first)
    resumed = trainer.setup(config, str(tmp_path))
    try:
        assert resumed.resumed and resumed.step_now == 3
        for (path, a), (_, b) in zip(flatten_with_param_paths(after_3).items(),
                                     flatten_with_param_paths(jax.device_get(resumed.state.trainable["student"])).items()):
            np.testing.assert_array_equal(a, b, err_msg=path)
        assert resumed.state.frozen is not None
        step = trainer.train(resumed)
        result = trainer.finish(resumed, step)
    except BaseException:
        trainer.abort(resumed)
        raise
    assert result.steps == 6 and result.skipped_steps == 0
    b_norm = sum(float(np.abs(x).sum()) for p, x in flatten_with_param_paths(
        jax.device_get(result.state.trainable["student"])).items() if p.endswith("lora_b"))
    assert b_norm > 0  # the adapters learned
    # The frozen base did not move.
    plain_state = flatten_with_param_paths(nnx.state(models.load_pretrained(setup["student"], dtype="float32")))
    for path, value in flatten_with_param_paths(jax.device_get(result.state.frozen["student"])).items():
        np.testing.assert_array_equal(value, plain_state[path], err_msg=path)


def test_checkpoint_leaves_out_the_base(setup, tmp_path):
    config = tiny_setup.tiny_config(setup, "kd", **{**LORA, "train.steps": 2, "train.export_hf": False})
    result = trainer.run(config, str(tmp_path))
    from jdistill.engine.checkpointing import Checkpointer

    checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
    try:
        restored = checkpointer._manager.restore(2)
    finally:
        checkpointer.close()
    paths = flatten_with_param_paths(restored["state"])
    assert not any(path.startswith("frozen") for path in paths)
    assert not any(path.endswith("kernel") for path in paths)
    n_student = sum(np.size(v) for p, v in paths.items() if p.startswith("trainable/student"))
    assert n_student == sum(x.size for x in jax.tree.leaves(result.state.trainable["student"]))


def _torch_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids, dtype=torch.long)).logits.numpy()


@pytest.mark.slow
def test_lora_demo_run_loss_decreases_and_exports_load_in_transformers_and_peft(setup, tmp_path):
    import peft

    config = tiny_setup.tiny_config(setup, "kd", **{**LORA, "train.steps": 12, "student.lora.dropout": 0.1,
                                                    "student.compute_dtype": "float32"})
    result = trainer.run(config, str(tmp_path))
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    losses = [r["loss"] for r in records if r.get("split") == "train" and "loss" in r]
    assert losses[-1] < losses[0]
    ids = np.array([[3, 9, 12, 5, 7, 2, 11, 4]], np.int32)
    ours = np.asarray(result.student()(ids).logits)
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "student_hf").eval()
    np.testing.assert_allclose(_torch_logits(merged, ids), ours, atol=1e-4)
    base = transformers.AutoModelForCausalLM.from_pretrained(setup["student"]).eval()
    adapted = peft.PeftModel.from_pretrained(base, str(tmp_path / "student_lora")).eval()
    np.testing.assert_allclose(_torch_logits(adapted, ids), ours, atol=1e-4)
    # And the adapters changed the model.
    plain = transformers.AutoModelForCausalLM.from_pretrained(setup["student"]).eval()
    assert np.abs(_torch_logits(plain, ids) - ours).max() > 1e-3


@pytest.mark.slow
def test_online_kd_with_a_lora_teacher(setup, tmp_path):
    config = tiny_setup.tiny_config(setup, "online_kd", **{
        **LORA, "teacher.lora.rank": 2, "teacher.lora.targets": "q_proj,v_proj", "train.steps": 2})
    result = trainer.run(config, str(tmp_path))
    teacher = flatten_with_param_paths(result.state.trainable["teacher"])
    assert sorted(teacher) == ["blocks/attn/q_proj/lora/lora_a", "blocks/attn/q_proj/lora/lora_b",
                               "blocks/attn/v_proj/lora/lora_a", "blocks/attn/v_proj/lora/lora_b"]
    assert {"student", "teacher"} == set(result.state.frozen)
    assert any(np.abs(np.asarray(x)).sum() > 0 for p, x in teacher.items() if p.endswith("lora_b"))
    assert (tmp_path / "teacher_hf" / "config.json").exists()
    assert (tmp_path / "teacher_lora" / "adapter_config.json").exists()


def test_teacher_lora_needs_a_trained_teacher(setup, tmp_path):
    config = tiny_setup.tiny_config(setup, "kd", **{"teacher.lora.rank": 2})
    with pytest.raises(ConfigError, match="teacher.lora.rank=2 applies to a teacher trained"):
        trainer.run(config, str(tmp_path))


@pytest.mark.parametrize("key,value,message", [
    ("rank", -1, "student.lora.rank must be an integer >= 0"),
    ("alpha", 0.0, "student.lora.alpha must be a number > 0"),
    ("dropout", 1.0, r"student.lora.dropout must be a number in \[0, 1\)"),
    ("targets", "", "student.lora.targets must name at least one layer"),
    ("targets", "q_proj(", "is not a regular expression"),
])
def test_lora_settings_are_checked(setup, key, value, message):
    config = tiny_setup.tiny_config(setup, "kd", **{"student.lora.rank": 4, f"student.lora.{key}": value})
    with pytest.raises(ConfigError, match=message):
        run_setup.lora_spec(config, "student")


def test_targets_that_match_nothing_name_the_layers(setup, tmp_path):
    config = tiny_setup.tiny_config(setup, "kd", **{"student.lora.rank": 4, "student.lora.targets": "qkv"})
    with pytest.raises(ConfigError, match="matched no layer.*blocks/attn/q_proj"):
        trainer.run(config, str(tmp_path))
