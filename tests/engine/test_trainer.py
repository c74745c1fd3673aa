"""End-to-end runs of the engine on the 8-device CPU mesh with tiny local models and data."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from jdistill import models
from jdistill.engine import trainer
from jdistill.engine.run_setup import ConfigError
from tests.engine import tiny_setup

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_setup.make_setup(tmp_path_factory.mktemp("setup"))


@pytest.fixture(scope="module")
def kd_run(setup, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("kd")
    return trainer.run(tiny_setup.tiny_config(setup, "kd"), str(workdir))


def _params(result):
    return jax.device_get(result.state.trainable)


def _assert_trees_close(a, b, **tol):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x, y, **tol)


@pytest.mark.slow
def test_kd_run_writes_everything_and_learns(kd_run):
    workdir = kd_run.workdir
    assert kd_run.steps == 6 and kd_run.skipped_steps == 0
    for name in ("report.md", "curves.png", "metrics.jsonl", "checkpoints", "student_hf"):
        assert os.path.exists(os.path.join(workdir, name)), name
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [2, 4, 6]
    assert train[-1]["loss"] < train[0]["loss"]  # it learns
    assert {"ce", "kd", "tokens_per_s", "learning_rate", "grad_norm"} <= set(train[0])
    final = kd_run.final_eval
    assert {"loss", "ce", "kd", "rougeL", "exact_match"} <= set(final)
    assert 0.0 <= final["rougeL"] <= 100.0
    report = open(os.path.join(workdir, "report.md")).read()
    assert "| student (kd) |" in report and "rougeL" in report


@pytest.mark.slow
def test_exported_student_matches_in_transformers(kd_run, setup):
    """The HF export of the trained student gives the trained student's logits in PyTorch."""
    directory = os.path.join(kd_run.workdir, "student_hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    ids = np.array([[1, 5, 6, 7, 8, 9]], np.int32)
    with torch.no_grad():
        want = hf(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    graphdef = nnx.graphdef(models.load_pretrained(setup["student"]))
    ours = nnx.merge(graphdef, kd_run.state.trainable["student"])
    np.testing.assert_allclose(np.asarray(ours(ids).logits), want, atol=1e-4)
    assert not np.allclose(np.asarray(models.load_pretrained(setup["student"])(ids).logits), want, atol=1e-3)


@pytest.mark.slow
def test_sft_runs_without_a_teacher(setup, tmp_path):
    config = tiny_setup.tiny_config(setup, "sft", **{"teacher.path": "", "eval.generate": False})
    result = trainer.run(config, str(tmp_path))
    assert result.steps == 6 and set(result.final_eval) == {"loss", "ce", "student_ce"}


@pytest.mark.slow
def test_resume_gives_the_uninterrupted_result(setup, kd_run, tmp_path):
    periodic = {"train.checkpoint_every": 2, "train.keep_checkpoints": 2}
    first = trainer.run(tiny_setup.tiny_config(setup, "kd", **periodic), str(tmp_path), max_steps_this_run=4)
    assert first.steps == 4 and first.final_eval == {}
    second = trainer.run(tiny_setup.tiny_config(setup, "kd", **periodic), str(tmp_path))
    assert second.steps == 6
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["4", "6"]  # keep_checkpoints=2
    _assert_trees_close(_params(second), _params(kd_run), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_gradient_accumulation_equals_the_full_batch(setup, tmp_path):
    common = {"train.steps": 2, "eval.generate": False, "train.export_hf": False,
              "mesh.data": 2, "mesh.tensor": 4, "eval.batch_size": 2}
    full = trainer.run(tiny_setup.tiny_config(setup, "kd", **common), str(tmp_path / "full"))
    accumulated = trainer.run(
        tiny_setup.tiny_config(setup, "kd", **common, **{"train.grad_accum": 4}), str(tmp_path / "acc")
    )
    # Float32 rounding differs between batch sizes (~1e-6 of each gradient's scale, largest for k_proj, whose
    # exact gradient has softmax-shift cancellations) and Adam's first steps amplify it; atol covers that.
    _assert_trees_close(_params(accumulated), _params(full), rtol=1e-5, atol=3e-6)


def test_non_finite_steps_are_skipped_then_stop_the_run(setup, tmp_path):
    config = tiny_setup.tiny_config(
        setup, "sft", **{"teacher.path": "", "optimizer.learning_rate": 1e30, "optimizer.grad_clip": 0.0,
                         "train.max_bad_steps": 2, "train.steps": 20}
    )
    with pytest.raises(trainer.NonFiniteLossError, match="2 consecutive steps.*train.max_bad_steps=2"):
        trainer.run(config, str(tmp_path))


def test_vocabulary_mismatch_names_the_cross_vocabulary_methods(setup, tmp_path):
    other_tok = tiny_setup.make_tokenizer(tmp_path / "tok", ["completely different words here"])
    other_teacher = tiny_setup.make_model_dir(tmp_path / "teacher", other_tok)
    config = tiny_setup.tiny_config(setup, "kd", **{"teacher.path": str(other_teacher)})
    with pytest.raises(ConfigError, match="tokenizers differ.*cross-vocabulary method"):
        trainer.run(config, str(tmp_path / "work"))


def test_micro_batch_must_divide_over_the_mesh(setup, tmp_path):
    config = tiny_setup.tiny_config(setup, "kd", **{"train.grad_accum": 4})  # micro-batch 2 on 8 devices
    with pytest.raises(ConfigError, match="micro-batch \\(2 = batch_size / grad_accum\\).*8 data-parallel shards"):
        trainer.run(config, str(tmp_path))


def test_unknown_config_key_is_a_clear_error():
    out = subprocess.run(
        [sys.executable, "-m", "jdistill.main", "--config=configs/kd.py", "--config.train.stpes=5"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert out.returncode == 2
    assert "Unknown config key 'train.stpes'. Did you mean 'train.steps'?" in out.stderr
    assert "Valid keys under 'train': allow_config_change, batch_size, checkpoint_dir, checkpoint_every, epochs" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_model_path_is_a_clear_error(tmp_path):
    from jdistill.engine.defaults import base_config

    config = base_config("kd")
    config.mesh.data = 8
    with pytest.raises(ConfigError, match="set --config.student.path=DIR"):
        trainer.run(config, str(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["kd", "sft"])
def test_fused_losses_train_like_the_logits_path(setup, tmp_path, method):
    """method.fused=on (chunked, no [tokens, V] logits) reaches the same parameters as the logits path."""
    common = {"train.steps": 2, "eval.generate": False, "train.export_hf": False, "method.fused_memory_mb": 1}
    if method == "sft":
        common["teacher.path"] = ""
    off = trainer.run(tiny_setup.tiny_config(setup, method, **common, **{"method.fused": "off"}),
                      str(tmp_path / "off"))
    on = trainer.run(tiny_setup.tiny_config(setup, method, **common, **{"method.fused": "on"}),
                     str(tmp_path / "on"))
    _assert_trees_close(_params(on), _params(off), rtol=1e-4, atol=1e-6)
    assert on.final_eval["loss"] == pytest.approx(off.final_eval["loss"], rel=1e-5)


def test_lm_text_term_adds_lm_coef_times_the_student_cross_entropy(setup, tmp_path):
    """data.lm_files: loss = method loss + lm_coef · CE(student, unlabelled windows), CE checked in torch."""
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(f"what is {i} plus {i % 7} ? it is {i + i % 7} ." for i in range(12)))
    common = {"train.steps": 1, "eval.generate": False, "train.export_hf": False, "logging.every": 1}
    plain = trainer.run(tiny_setup.tiny_config(setup, "kd", **common), str(tmp_path / "plain"))
    config = tiny_setup.tiny_config(setup, "kd", **common, **{"data.lm_files": str(text), "data.lm_coef": 0.5})
    with_lm = trainer.run(config, str(tmp_path / "lm"))
    read = lambda run: [json.loads(line) for line in open(os.path.join(run.workdir, "metrics.jsonl"))]  # noqa: E731
    row = [r for r in read(with_lm) if r["split"] == "train"][0]
    plain_row = [r for r in read(plain) if r["split"] == "train"][0]

    from jdistill.data.lm_text import LMWindows, read_documents

    windows = LMWindows.from_documents(read_documents(str(text)), setup["tokenizer"], max_len=32, batch_size=8,
                                       seed=0)
    batch = windows.batch(0)
    reference = transformers.AutoModelForCausalLM.from_pretrained(setup["student"]).eval()
    with torch.no_grad():
        logits = reference(torch.tensor(batch["lm_input_ids"], dtype=torch.long)).logits
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                               torch.tensor(batch["lm_targets"], dtype=torch.long).reshape(-1))
    np.testing.assert_allclose(row["lm_loss"], float(ce), rtol=1e-4)
    np.testing.assert_allclose(row["loss"], plain_row["loss"] + 0.5 * float(ce), rtol=1e-4)
