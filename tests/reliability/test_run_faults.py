"""Issue 17, items 1, 2, 3, 6, 8 and 9 end to end on tiny models: skipped steps, kill -9, a damaged
checkpoint, a NaN teacher, NaN weights and damaged model files."""

import os
import signal
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill.engine import trainer
from jdistill.engine.metrics_writer import read_metrics
from jdistill.engine.run_health import NonFiniteLossError, NonFiniteWeightsError
from jdistill.engine.run_setup import ConfigError
from jdistill.models.errors import CheckpointError
from tests.engine import tiny_setup
from tests.reliability import faults

# The word whose teacher embedding row is NaN: it occurs in the batches of steps 2, 3, 9 and 12.
RARE_WORD, SKIPPED = "10", [2, 3, 9, 12]
SKIP_RUN = {"train.steps": 12, "train.checkpoint_every": 2, "train.keep_checkpoints": 3, "logging.every": 1,
            "train.max_bad_fraction": 0.5, "eval.generate": False}


@pytest.fixture(scope="module")
def nan_row_teacher(tiny, tmp_path_factory):
    teacher = faults.copy_model(tiny["teacher"], str(tmp_path_factory.mktemp("t") / "teacher"))
    faults.nan_rows(teacher, [tiny["tokenizer"].convert_tokens_to_ids(RARE_WORD)])
    return teacher


@pytest.fixture(scope="module")
def uninterrupted(tiny, nan_row_teacher, tmp_path_factory):
    config = tiny_setup.tiny_config(tiny, "kd", **SKIP_RUN, **{"teacher.path": nan_row_teacher})
    workdir = tmp_path_factory.mktemp("uninterrupted")
    return config, trainer.run(config, str(workdir))


def _train_records(workdir):
    return [r for r in read_metrics(os.path.join(workdir, "metrics.jsonl")) if r["split"] == "train"]


def _leaves(result):
    return jax.tree.leaves(jax.device_get(result.state.trainable))


@pytest.mark.slow
def test_skipped_steps_keep_one_step_counter(uninterrupted):
    """Every step counts, skipped or not: the state, the checkpoints, the metrics and the report agree."""
    _, result = uninterrupted
    assert (result.steps, result.skipped_steps, result.updates) == (12, 4, 8)
    assert int(result.state.step) == 12
    records = _train_records(result.workdir)
    assert [r["step"] for r in records] == list(range(1, 13))
    assert [r["step"] for r in records if not r["finite"]] == SKIPPED
    assert all(not r["teacher_finite"] for r in records if not r["finite"])
    assert records[-1]["updates"] == 8.0
    assert sorted(os.listdir(os.path.join(result.workdir, "checkpoints"))) == ["10", "12", "8"]
    report = open(os.path.join(result.workdir, "report.md")).read()
    assert "- **steps**: 12\n- **updates**: 8\n- **skipped steps**: 4 (4 for non-finite teacher outputs)" in report


@pytest.mark.slow
def test_rerunning_a_finished_run_trains_nothing_more(uninterrupted):
    config, first = uninterrupted
    again = trainer.run(config, first.workdir)
    assert (again.steps, again.updates) == (12, 8)
    for a, b in zip(_leaves(again), _leaves(first)):
        np.testing.assert_array_equal(a, b)
    assert [r["step"] for r in _train_records(first.workdir)] == list(range(1, 13))


@pytest.mark.slow
def test_kill_9_then_a_damaged_checkpoint_resume_to_the_uninterrupted_weights(uninterrupted, tmp_path, capsys):
    """kill -9 at step 7 (after the checkpoint of step 6), then flipped bytes in that checkpoint: the rerun
    names it, resumes from step 4 (skipped steps 2 and 3 behind it), and ends with the uninterrupted run's
    weights; the metrics written after step 4 are superseded, not repeated."""
    config, reference = uninterrupted
    config_path = tmp_path / "config.json"
    config_path.write_text(config.to_json())
    workdir = tmp_path / "work"
    worker = [sys.executable, "-m", "tests.reliability.kill_worker", str(config_path), str(workdir), "7"]
    killed = subprocess.run(worker, capture_output=True, text=True, cwd=faults.REPO, timeout=600,
                            env={**os.environ, "PYTHONPATH": faults.REPO})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4", "6"]
    assert [r["step"] for r in _train_records(workdir)] == list(range(1, 8))
    faults.flip_bytes_across(faults.largest_array_file(str(workdir / "checkpoints" / "6")))

    result = trainer.run(config, str(workdir))

    assert (result.steps, result.skipped_steps, result.updates) == (12, 4, 8)
    for a, b in zip(_leaves(result), _leaves(reference)):
        np.testing.assert_array_equal(a, b)  # bit-exact
    assert os.listdir(workdir / "checkpoints_damaged") == ["6"]
    assert (f"WARNING: checkpoint {workdir / 'checkpoints' / '6'} is damaged (" in capsys.readouterr().out)
    assert [r["step"] for r in _train_records(workdir)] == list(range(1, 13))
    superseded = read_metrics(str(workdir / "metrics.superseded.jsonl"))
    assert [r["step"] for r in superseded if r["split"] == "train"] == [5, 6, 7]


@pytest.mark.parametrize("fused", ["off", pytest.param("on", marks=pytest.mark.slow)])
def test_a_nan_teacher_is_detected_and_stops_the_run(tiny, tmp_path, capsys, fused):
    """An all-NaN teacher used to give KL = 0 and a silent 'success' (partial SFT); logits and fused path."""
    teacher = faults.copy_model(tiny["teacher"], str(tmp_path / "teacher"))
    faults.nan_rows(teacher, np.arange(len(tiny["tokenizer"])))
    config = tiny_setup.tiny_config(tiny, "kd", **{"teacher.path": teacher, "train.max_bad_steps": 2,
                                                  "train.max_bad_fraction": 1.0, "method.fused": fused,
                                                  "method.fused_memory_mb": 1})
    with pytest.raises(NonFiniteLossError) as error:
        trainer.run(config, str(tmp_path / "work"))
    assert str(error.value) == (
        "2 consecutive steps had non-finite teacher outputs (limit train.max_bad_steps=2), up to step 2. The "
        "teacher's outputs are not finite: check teacher.compute_dtype (bfloat16 overflows: try float32) and the "
        "teacher's weights (teacher.path).")
    out = capsys.readouterr().out
    assert f"WARNING: The teacher ({teacher}, as float32) has non-finite weights: embed/embedding (" in out
    assert "step 1: skipped (the teacher's outputs are not finite" in out
    assert not os.path.exists(tmp_path / "work" / "student_hf")


def test_a_student_with_nan_weights_is_refused_before_training(tiny, tmp_path):
    student = faults.copy_model(tiny["student"], str(tmp_path / "student"))
    faults.nan_rows(student, [7])
    config = tiny_setup.tiny_config(tiny, "kd", **{"student.path": student})
    with pytest.raises(NonFiniteWeightsError) as error:
        trainer.run(config, str(tmp_path / "work"))
    assert str(error.value).startswith(
        f"The student ({student}, as float32) has non-finite weights: embed/embedding (32 values). Such values "
        "never become finite again in training, and the export would be refused")


def test_non_finite_trained_weights_are_not_exported(tiny, tmp_path):
    from flax import nnx

    from jdistill import models

    student = models.load_pretrained(tiny["student"])
    graphdef, params = nnx.split(student)
    params = jax.tree.map(lambda x: x.at[0].set(jnp.inf) if x.ndim == 2 else x, params)
    run = types.SimpleNamespace(
        state=types.SimpleNamespace(trainable={"student": params}), workdir=str(tmp_path),
        checkpointer=types.SimpleNamespace(latest_step=lambda: 12, directory=str(tmp_path / "checkpoints")),
        teacher=types.SimpleNamespace(exported=False), spec=types.SimpleNamespace(student_graphdef=graphdef))
    with pytest.raises(NonFiniteWeightsError, match=r"^The trained student has non-finite weights: .*\. It was not "
                       r"exported \(the last checkpoint is step 12 in .*checkpoints\)\."):
        trainer.export(run)
    assert not os.path.exists(tmp_path / "student_hf")


@pytest.mark.parametrize("damage", ["truncated-weights", "damaged-config"])
def test_a_damaged_model_file_is_named(tiny, tmp_path, damage):
    student = faults.copy_model(tiny["student"], str(tmp_path / "student"))
    if damage == "truncated-weights":
        faults.truncate(os.path.join(student, "model.safetensors"), 0.5)
        expected = f"{student}/model.safetensors: cannot read the safetensors header"
    else:
        open(os.path.join(student, "config.json"), "w").write('{"model_type": "llama",')
        expected = f"student.path: {student}/config.json is not valid JSON"
    with pytest.raises((CheckpointError, ConfigError)) as error:
        trainer.run(tiny_setup.tiny_config(tiny, "kd", **{"student.path": student}), str(tmp_path / "work"))
    assert str(error.value).startswith(expected)


@pytest.mark.slow
def test_every_divergence_flags_a_nan_teacher_on_both_paths(tiny, tmp_path):
    """The kernels read NaN teacher logits as probability 0 (forward KL: a finite, wrong loss); the step's own
    check is what catches it, whatever the divergence, on the logits and the fused path."""
    from flax import nnx

    from jdistill import losses, models
    from jdistill.engine import train_step as ts
    from jdistill.engine.run_setup import load_student_tokenizer, model_facts
    from jdistill.methods import make_method
    from jdistill.methods.base import StepContext

    teacher_dir = faults.copy_model(tiny["teacher"], str(tmp_path / "teacher"))
    faults.nan_rows(teacher_dir, [tiny["tokenizer"].convert_tokens_to_ids(RARE_WORD)])
    student, teacher = models.load_pretrained(tiny["student"]), models.load_pretrained(teacher_dir)
    (s_def, s_params), (t_def, t_params) = nnx.split(student), nnx.split(teacher)
    token = tiny["tokenizer"].convert_tokens_to_ids(RARE_WORD)
    ids = np.array([[1, 9, 10, token, 11, 2, 0, 0], [1, 9, 10, 12, 11, 2, 0, 0]], np.int32)
    mask = ids != 0
    batch = {"input_ids": ids, "attention_mask": mask, "targets": np.roll(ids, -1, axis=1),
             "loss_mask": (mask & (np.arange(8) >= 2)).astype(np.float32)}
    one = jnp.ones((), jnp.float32)
    ctx = StepContext(progress=one * 0.5, num_tokens=one, num_sequences=one, teacher_num_tokens=one,
                      rng=jax.random.key_data(jax.random.key(0)))
    config = tiny_setup.tiny_config(tiny, "kd")
    facts = model_facts(config, load_student_tokenizer(config))
    specs = {}
    for divergence in sorted(losses.DIVERGENCES):
        for fused in ("off", "on"):
            with config.unlocked():
                config.method.divergence, config.method.fused = divergence, fused
            specs[divergence, fused] = ts.StepSpec(
                method=make_method(config.method, facts), optimizer=None, student_graphdef=s_def,
                teacher_graphdef=t_def, grad_accum=1, total_steps=1)

    @jax.jit
    def all_losses(s_params, t_params, batch):
        out = {}
        for key, spec in specs.items():
            loss, metrics = ts.forward_and_loss({"student": s_params, "method": {}}, t_params, batch, ctx, spec)
            out[key] = (loss, metrics[ts.TEACHER_NONFINITE])
        return out

    results = all_losses(s_params, t_params, batch)
    assert np.isfinite(results["forward_kl", "off"][0]) and np.isfinite(results["forward_kl", "on"][0])  # silent
    for (divergence, fused), (_, flagged) in results.items():
        assert flagged == 6, (divergence, fused)  # the 6 real positions of the row with the NaN token


@pytest.mark.slow
def test_a_full_disk_stops_the_command_at_the_first_checkpoint_in_two_lines(tiny, tmp_path):
    """The checkpoint directory on a 256 kB tmpfs: the command stops when the first checkpoint cannot fit, with
    exit status 1 and two lines on stderr (no orbax log, no traceback), not one interval later."""
    if not faults.can_mount_tmpfs():
        pytest.skip("no private tmpfs mount here (unshare -rm)")
    mount, workdir = tmp_path / "mnt", tmp_path / "work"
    args = ["jdistill.main", "--config=configs/kd.py", f"--workdir={workdir}",
            f"--config.student.path={tiny['student']}", f"--config.teacher.path={tiny['teacher']}",
            f"--config.data.train_files={tiny['train']}", f"--config.data.eval_files={tiny['eval']}",
            "--config.data.max_len=32", "--config.data.max_prompt_len=16", "--config.data.buckets=16,32",
            "--config.train.steps=6", "--config.train.checkpoint_every=2", f"--config.train.checkpoint_dir={mount}/ck",
            "--config.logging.progress_bar=false", "--config.logging.tensorboard=false", "--config.eval.generate=false",
            "--config.logging.every=1"]
    script = f"import runpy, sys; sys.argv = {args!r}; runpy.run_module('jdistill.main', run_name='__main__')"
    out = faults.run_on_small_tmpfs(str(mount), "256k", script, {"JAX_PLATFORMS": "cpu"})
    assert out.returncode == 1, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2, out.stderr[-3000:]
    assert lines[0].startswith(f"jdistill: error: No space for checkpoint step 2 in {mount}/ck: it needs about ")
    assert lines[1] == f"jdistill: (the traceback is in {workdir}/error.log, or printed with --verbose)"
    assert [r["step"] for r in _train_records(workdir)] == [1, 2]  # stopped at the checkpoint, not one later
    assert not os.path.exists(workdir / "student_hf")
