"""Issue 17, items 3 and 5: every numeric field is checked before anything is loaded, naming the field and range."""

import os
import subprocess
import sys
import time

import ml_collections
import pytest

from jdistill.engine import config_checks, trainer
from jdistill.engine.defaults import base_config
from jdistill.engine.run_setup import ConfigError
from tests.engine import tiny_setup
from tests.reliability.faults import REPO


@pytest.fixture
def setup(tiny):
    return tiny


@pytest.mark.parametrize("key, value, message", [
    ("train.batch_size", -8, "train.batch_size must be an integer >= 1; got -8."),
    ("train.batch_size", 0, "train.batch_size must be an integer >= 1; got 0."),
    ("train.grad_accum", 0, "train.grad_accum must be an integer >= 1; got 0."),
    ("optimizer.learning_rate", -1e-5, "optimizer.learning_rate must be a number > 0; got -1e-05."),
    ("optimizer.learning_rate", float("nan"), "optimizer.learning_rate must be a number > 0; got nan."),
    ("eval.batch_size", 0, "eval.batch_size must be an integer >= 1; got 0."),
    ("logging.every", 0, "logging.every must be an integer >= 1; got 0."),
    ("eval.every", -2, "eval.every must be an integer >= -1 (0 = only at the end, -1 = once per epoch); got -2."),
    ("optimizer.b2", 1.0, "optimizer.b2 must be a number in [0, 1); got 1.0."),
    ("data.eval_fraction", 0.0, "data.eval_fraction must be a number in (0, 1); got 0.0."),
    ("train.max_bad_fraction", 1.5, "train.max_bad_fraction must be a number in [0, 1]; got 1.5."),
    ("data.truncation", "cut", "data.truncation must be one of 'truncate' | 'drop'; got 'cut'."),
])
def test_a_value_out_of_range_names_the_field_and_range(setup, tmp_path, key, value, message):
    config = tiny_setup.tiny_config(setup, "kd")
    group, field = key.split(".")
    with config.unlocked():
        config[group][field] = value
    started = time.perf_counter()
    with pytest.raises(ConfigError) as error:
        trainer.run(config, str(tmp_path / "work"))
    assert str(error.value) == message
    assert time.perf_counter() - started < 2.0  # before any tokenizer, model or data is loaded
    assert not os.path.exists(tmp_path / "work")


def test_every_numeric_field_of_the_shared_groups_has_a_rule():
    config = base_config("kd")
    for group in config_checks.CHECKED_GROUPS:
        for field, value in config[group].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                assert f"{group}.{field}" in config_checks.RULES, f"{group}.{field} has no range rule"
    config_checks.validate_config(config, check_paths=False)  # the defaults pass


def test_relations_between_fields():
    config = base_config("kd")
    config.data.max_prompt_len = 512
    with pytest.raises(ConfigError, match=r"data.max_prompt_len \(512\) must be below data.max_len \(512\)"):
        config_checks.validate_config(config, check_paths=False)
    config = base_config("kd")
    config.train.batch_size, config.train.grad_accum = 8, 3
    with pytest.raises(ConfigError, match=r"train.batch_size \(8\) must be a multiple of train.grad_accum \(3\)"):
        config_checks.validate_config(config, check_paths=False)


def test_a_missing_model_path_is_a_path_not_a_hub_id(setup, tmp_path):
    """No 'Repo id must be in the form...', no hub attempt: the missing directory is named at once."""
    for missing in (str(tmp_path / "nowhere" / "student"), "./student", "models/2024/student"):
        config = tiny_setup.tiny_config(setup, "kd", **{"student.path": missing})
        started = time.perf_counter()
        with pytest.raises(ConfigError, match=f"student.path: no such directory: '{missing}'"):
            trainer.run(ml_collections.FrozenConfigDict(config), str(tmp_path / "work"))
        assert time.perf_counter() - started < 2.0
    config = tiny_setup.tiny_config(setup, "kd", **{"data.train_files": str(tmp_path / "train.jsonl")})
    with pytest.raises(ConfigError, match="data.train_files: data file '.*train.jsonl' does not exist."):
        trainer.run(config, str(tmp_path / "work"))
    assert config_checks.looks_like_path("./x") and config_checks.looks_like_path("/a/b")
    assert not config_checks.looks_like_path("Qwen/Qwen2.5-0.5B")


def test_the_command_line_prints_one_line_and_exits_1(setup, tmp_path):
    """Errors at the entry point: one line naming the fix, no traceback; the traceback with --verbose."""
    args = [sys.executable, "-m", "jdistill.main", "--config=configs/kd.py", f"--workdir={tmp_path / 'w'}",
            f"--config.student.path={setup['student']}", f"--config.teacher.path={setup['teacher']}",
            f"--config.data.train_files={setup['train']}", "--config.train.batch_size=-8"]
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[0] == "jdistill: error: train.batch_size must be an integer >= 1; got -8."
    assert "Traceback" not in out.stderr and len(lines) == 2
    assert lines[1] == "jdistill: (the traceback is printed with --verbose)"  # the workdir was never made


def test_reported_errors_log_the_traceback_and_show_it_with_verbose(tmp_path, capsys):
    from jdistill.engine.error_report import reported_errors

    with pytest.raises(SystemExit) as exit_status:
        with reported_errors(verbose=False, workdir=str(tmp_path)):
            raise ConfigError("train.batch_size must be an integer >= 1; got 0.")
    assert exit_status.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        "jdistill: error: train.batch_size must be an integer >= 1; got 0.",
        f"jdistill: (the traceback is in {tmp_path}/error.log, or printed with --verbose)"]
    assert "Traceback" in (tmp_path / "error.log").read_text()
    with pytest.raises(ConfigError):
        with reported_errors(verbose=True, workdir=str(tmp_path)):
            raise ConfigError("shown with its traceback")
    with pytest.raises(SystemExit):
        with reported_errors(verbose=False):
            raise OSError(28, "No space left on device", "/data/metrics.jsonl")
    assert capsys.readouterr().err.startswith(
        "jdistill: error: No space left on device (/data/metrics.jsonl). Free some space")
