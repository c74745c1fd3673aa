"""Issue 17, items 3, 7 and 9: the workdir lock, superseded metrics after a resume, and the run's health watch."""

import json
import os
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

from jdistill.engine import trainer
from jdistill.engine.metrics_writer import MetricsWriter, read_metrics
from jdistill.engine.run_health import NonFiniteLossError, NonFiniteWeightsError, RunHealth, check_finite_weights
from jdistill.engine.workdir_lock import WorkdirLock, WorkdirLockedError
from tests.engine import tiny_setup
from tests.reliability.faults import REPO

_HOLDER = "import sys, time; from jdistill.engine.workdir_lock import WorkdirLock; " \
          "WorkdirLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(600)"


def _hold_lock(workdir) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(workdir)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": REPO}, cwd=REPO)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_run_on_a_workdir_in_use_stops_naming_the_other(tiny, tmp_path):
    holder = _hold_lock(tmp_path)
    try:
        started = time.perf_counter()
        with pytest.raises(WorkdirLockedError) as error:
            trainer.run(tiny_setup.tiny_config(tiny, "kd"), str(tmp_path))
        assert time.perf_counter() - started < 2.0  # before anything is loaded
        message = str(error.value)
        assert message.startswith(f"The workdir {tmp_path} is in use by another jdistill run (pid {holder.pid} on ")
        assert "Wait for it to finish or stop it, or use another --workdir." in message
        assert not os.path.exists(tmp_path / "checkpoints") and not os.path.exists(tmp_path / "metrics.jsonl")
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, capsys):
    holder = _hold_lock(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)  # kill -9 leaves the lock file behind
    holder.wait()
    assert json.loads((tmp_path / ".jdistill.lock").read_text())["pid"] == holder.pid
    lock = WorkdirLock(str(tmp_path)).acquire()
    assert f"taking over the workdir lock of an ended run (pid {holder.pid} on" in capsys.readouterr().out
    assert json.loads((tmp_path / ".jdistill.lock").read_text())["pid"] == os.getpid()
    with pytest.raises(WorkdirLockedError):
        WorkdirLock(str(tmp_path)).acquire()  # a second holder, even in the same process
    lock.release()
    WorkdirLock(str(tmp_path)).acquire().release()


def test_records_after_the_resumed_checkpoint_are_superseded_not_repeated(tmp_path):
    writer = MetricsWriter(str(tmp_path), tensorboard=False)
    for step in range(1, 8):
        writer.write(step, {"loss": float(step)}, split="train")
    writer.write(4, {"loss": 0.5}, split="eval")
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "split": "tr')  # the kill came mid-line
    MetricsWriter(str(tmp_path), tensorboard=False, resumed_from=4)  # resumed from the checkpoint of step 4
    kept = read_metrics(str(tmp_path / "metrics.jsonl"))
    assert [(r["step"], r["split"]) for r in kept] == [(1, "train"), (2, "train"), (3, "train"), (4, "train"),
                                                       (4, "eval")]
    superseded = (tmp_path / "metrics.superseded.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in superseded[:3]] == [5, 6, 7] and len(superseded) == 4


def _health(**kw):
    train = type("T", (), {"max_bad_steps": 3, "max_bad_fraction": 0.1, **kw})
    return RunHealth.from_config(train, total_steps=100)


def test_more_skipped_steps_than_the_fraction_allows_stop_the_run():
    health = _health(max_bad_steps=100)
    for step in range(1, 11):
        health.after_step(step, {"finite": False, "teacher_finite": True, "loss": np.nan},
                          bad_in_a_row=1, bad_total=step, bad_teacher_total=0)
    with pytest.raises(NonFiniteLossError) as error:
        health.after_step(11, {"finite": False, "teacher_finite": True, "loss": np.nan},
                          bad_in_a_row=1, bad_total=11, bad_teacher_total=0)
    assert str(error.value).startswith(
        "11 of the first 11 steps were skipped (0 for non-finite teacher outputs, 11 for a non-finite loss or "
        "gradient): more than train.max_bad_fraction=0.1 of the run's 100 steps, so its result would not be the "
        "one asked for. Lower optimizer.learning_rate, check the data, or use student.compute_dtype=float32. If "
        "that many skipped steps are expected, raise train.max_bad_fraction.")


def test_a_loss_that_explodes_while_finite_is_warned_about_once(capsys):
    health = _health()
    losses = [2.0] * 10 + [2.0 * 1.5 ** k for k in range(30)]
    for step, loss in enumerate(losses, start=1):
        health.after_step(step, {"finite": True, "teacher_finite": True, "loss": loss},
                          bad_in_a_row=0, bad_total=0, bad_teacher_total=0)
    out = capsys.readouterr().out
    assert out.count("WARNING:") == 1 and "is diverging" in out
    assert "x its early value (2, the first 10 steps): training is diverging. Lower optimizer.learning_rate" in out
    assert health.warnings and RunHealth.from_config(
        type("T", (), {"max_bad_steps": 3, "max_bad_fraction": 0.1}), 100, health.state_dict()).exploded


def test_non_finite_weights_are_named():
    params = {"embed": {"embedding": jnp.ones((4, 2)).at[1, 0].set(jnp.nan)}, "norm": {"scale": jnp.ones(2)}}
    with pytest.raises(NonFiniteWeightsError, match=r"^The student has non-finite weights: embed/embedding "
                       r"\(1 values\)\. Fix\.$"):
        check_finite_weights(params, "The student", "Fix.")
