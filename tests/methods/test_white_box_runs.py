"""Feature, relation, online, self- and sparse KD configs a few steps on the 8-device CPU mesh.

Each run uses its config file's method settings on tiny local models
(tests/engine/tiny_setup.py). Besides running, each checks what its engine
path promises: frozen teachers stay out of the trained state, online KD trains,
checkpoints and exports its teacher, the EMA teacher follows the student by the
EMA rule, a student export serves as a self-distillation teacher, and the
stored top-k targets of sparse KD sit on the positions of the student's targets.
"""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from jdistill import data as data_lib
from jdistill import models
from jdistill.engine import trainer
from jdistill.engine.checkpointing import Checkpointer
from jdistill.data import topk_store
from jdistill.methods import DataContext, make_method
from tests.engine import tiny_setup
from tests.repo_configs import load_repo_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_setup.make_setup(tmp_path_factory.mktemp("white_box"))


def config_for(setup, name, **overrides):
    file_config = load_repo_config(name)
    settings = {"train.steps": 2, "eval.generate": False, "train.export_hf": False, **overrides}
    method_overrides = {k: v for k, v in settings.items() if k.startswith("method.")}
    config = tiny_setup.tiny_config(setup, file_config.method.name,
                                    **{k: v for k, v in settings.items() if k not in method_overrides})
    config.method = file_config.method  # the config file's method settings, on tiny models
    for key, value in method_overrides.items():  # then the test's own method settings
        *groups, field = key.split(".")[1:]
        node = config.method
        for group in groups:
            node = node[group]
        node[field] = value
    if not file_config.teacher.path and "teacher.path" not in overrides:
        config.teacher.path = ""  # self-distillation: no teacher model
    return config


def params_of(path):
    return jax.device_get(nnx.state(models.load_pretrained(path, dtype="float32")))


def assert_trees_close(a, b, **tolerance):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), **tolerance)


def trees_differ(a, b) -> bool:
    return any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow
@pytest.mark.parametrize("name,terms", [("feature_kd", {"feature", "attention"}),
                                        ("relation_kd", {"token_relation", "sample_relation"})])
def test_feature_and_relation_configs_run(setup, tmp_path, name, terms):
    config = config_for(setup, name)
    result = trainer.run(config, str(tmp_path))
    assert result.steps == 2 and result.skipped_steps == 0
    assert {"ce", "kd", *terms} <= set(result.final_eval)
    assert all(np.isfinite(v) for v in result.final_eval.values())
    assert set(result.state.trainable) == {"student", "method"} and result.state.ema is None  # teacher frozen
    if name == "feature_kd":  # the projectors are trained
        student, teacher = (models.load_pretrained(setup[k], dtype="float32") for k in ("student", "teacher"))
        initial = make_method(config.method).init_params(jax.random.key(config.train.seed + 1), student, teacher)
        trained = jax.device_get(result.state.trainable["method"])
        assert len(trained["projectors"]) == 2 and trees_differ(trained, initial)


@pytest.mark.slow
def test_online_kd_trains_checkpoints_and_exports_both_models(setup, tmp_path):
    config = config_for(setup, "online_kd", **{"train.export_hf": True, "train.checkpoint_every": 1})
    result = trainer.run(config, str(tmp_path))
    assert result.steps == 2 and {"ce", "kd", "teacher_ce", "teacher_kd"} <= set(result.final_eval)
    teacher = jax.device_get(result.state.trainable["teacher"])
    assert trees_differ(teacher, params_of(setup["teacher"]))  # the teacher learned
    assert_trees_close(params_of(os.path.join(tmp_path, "teacher_hf")), teacher, atol=1e-6)
    assert_trees_close(params_of(os.path.join(tmp_path, "student_hf")),
                       jax.device_get(result.state.trainable["student"]), atol=1e-6)
    checkpointer = Checkpointer(os.path.join(tmp_path, "checkpoints"))
    restored, _, _ = checkpointer.restore(2, result.state)
    checkpointer.close()
    assert_trees_close(jax.device_get(restored.trainable["teacher"]), teacher, atol=0)


@pytest.fixture(scope="module")
def ema_run(setup, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ema")
    config = config_for(setup, "self_distill", **{
        "train.export_hf": True, "train.checkpoint_every": 1, "train.keep_checkpoints": 3,
    })
    config.method.ema_decay = 0.6
    return config, trainer.run(config, str(workdir))


@pytest.mark.slow
def test_ema_teacher_follows_the_student_by_the_ema_rule(setup, ema_run):
    config, result = ema_run
    assert result.steps == 2 and "teacher" not in result.state.trainable
    checkpointer = Checkpointer(os.path.join(result.workdir, "checkpoints"))
    states = {step: jax.device_get(checkpointer.restore(step, result.state)[0]) for step in (1, 2)}
    checkpointer.close()
    d = 0.6
    s0 = params_of(setup["student"])
    s1, s2 = states[1].trainable["student"], states[2].trainable["student"]
    ema1 = jax.tree.map(lambda e, s: d * e + (1 - d) * s, s0, s1)
    ema2 = jax.tree.map(lambda e, s: d * e + (1 - d) * s, ema1, s2)
    assert_trees_close(states[1].ema, ema1, rtol=1e-6, atol=1e-7)
    assert_trees_close(states[2].ema, ema2, rtol=1e-6, atol=1e-7)
    assert trees_differ(states[2].ema, s2) and trees_differ(states[2].ema, s0)
    assert_trees_close(params_of(os.path.join(result.workdir, "teacher_hf")), states[2].ema, atol=1e-6)


@pytest.mark.slow
def test_self_distillation_from_an_exported_student(setup, ema_run, tmp_path):
    _, earlier = ema_run
    config = config_for(setup, "self_distill", **{"teacher.path": os.path.join(earlier.workdir, "student_hf")})
    config.method.self_teacher = "checkpoint"
    result = trainer.run(config, str(tmp_path))
    assert result.steps == 2 and result.state.ema is None and "teacher" not in result.state.trainable
    assert np.isfinite(result.final_eval["kd"]) and result.final_eval["kd"] > 0
    config.teacher.path = ""
    with pytest.raises(ValueError, match="student_hf"):
        trainer.run(config, str(tmp_path / "no_teacher"))


@pytest.mark.slow
def test_sparse_kd_generates_targets_that_sit_on_the_student_targets(setup, tmp_path):
    config = config_for(setup, "sparse_kd", **{
        "method.teacher_data.max_new_tokens": 6, "method.teacher_data.batch_size": 16, "logging.every": 1,
    })
    k = config.method.teacher_data.num_topk_logprobs
    result = trainer.run(config, str(tmp_path))
    assert result.steps == 2 and set(result.final_eval) == {"loss", "ce", "student_ce"}  # gold eval data: CE only
    train_logs = [json.loads(line) for line in open(tmp_path / "metrics.jsonl") if '"train"' in line]
    assert all(np.isfinite(r["kd"]) and r["kd"] > 0 for r in train_logs)
    records = [json.loads(line) for line in open(tmp_path / "teacher_topk.jsonl")]
    store = topk_store.TopKStore(str(tmp_path / "teacher_topk.topk"))
    assert len(records) == 48 and len(store) == 48 and store.k == k and store.source == "generated"

    # The stored rows are the teacher's own distribution at the positions whose target they describe.
    tokenizer = setup["tokenizer"]
    method = make_method(config.method)
    text, _ = data_lib.to_text_examples(records[:8])
    examples, _ = data_lib.tokenize_examples(text, tokenizer, max_len=32, max_prompt_len=16)
    examples = method.prepare_examples(examples, DataContext(config, str(tmp_path), tokenizer, None, "train"))
    batch = data_lib.collate(examples, buckets=(32,), pad_id=tokenizer.pad_token_id)
    teacher = models.load_pretrained(setup["teacher"], dtype="float32")
    logits = np.asarray(teacher(batch["input_ids"], batch["attention_mask"]).logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    rows, cols = np.nonzero(batch["loss_mask"])
    stored = batch["teacher_topk_logprobs"][rows, cols]
    recomputed = np.take_along_axis(log_p[rows, cols], batch["teacher_topk_ids"][rows, cols], axis=-1)
    np.testing.assert_allclose(recomputed, stored, atol=2e-4, rtol=2**-11)  # float16 storage
    np.testing.assert_array_equal(batch["teacher_topk_ids"][rows, cols, 0], log_p[rows, cols].argmax(-1))
