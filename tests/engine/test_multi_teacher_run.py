"""Several frozen teachers in one run: loading, the batch arrays each reads, the cost report, the errors."""

import json
import os

import numpy as np
import pytest

from jdistill.engine import config_checks, run_setup, trainer
from jdistill.engine.run_setup import ConfigError
from jdistill.methods import make_method
from tests.engine import tiny_setup
from tests.repo_configs import load_repo_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_setup.make_cross_setup(tmp_path_factory.mktemp("multi"))


def multi_config(setup, **overrides):
    config = tiny_setup.tiny_config(setup, "multi_teacher", **{"train.steps": 2, "eval.generate": False, **overrides})
    config.method = load_repo_config("multi_teacher").method  # the config file's settings, on tiny models
    return config


@pytest.mark.slow
def test_two_teachers_of_two_vocabularies_train_and_report_their_costs(setup, tmp_path):
    config = multi_config(setup, **{"teacher.extra_paths": setup["teacher_b"]})
    result = trainer.run(config, str(tmp_path))
    assert result.steps == 2 and result.skipped_steps == 0
    metrics = result.final_eval
    assert all(np.isfinite(metrics[k]) for k in ("loss", "ce", "kd", "kd_teacher0", "kd_teacher1"))
    # kd = 0.5 · D(p_A, q) + 0.5 · ULD_B (one same-vocabulary teacher: the mixture is its distribution).
    np.testing.assert_allclose(metrics["kd"], 0.5 * metrics["kd_teacher0"] + 0.5 * metrics["kd_teacher1"],
                               rtol=1e-5)
    report = open(os.path.join(tmp_path, "report.md"), encoding="utf-8").read()
    for k, path in enumerate((setup["teacher"], setup["teacher_b"])):
        assert f"teacher {k} ({path})" in report
    assert "M parameters" in report and "GFLOP" in report and "ms per step" in report
    saved = json.load(open(os.path.join(tmp_path, "config.json"), encoding="utf-8"))
    assert json.dumps(saved).count(setup["teacher_b"]) >= 1


def test_which_arrays_each_teacher_reads(setup):
    config = multi_config(setup, **{"teacher.extra_paths": setup["teacher_b"]})
    facts = run_setup.model_facts(config, setup["tokenizer"])
    assert facts.teachers_share_vocabulary == (True, False)
    method = make_method(config.method, facts)
    assert method.cross_vocabulary
    models = run_setup.Models(None, object(), setup["tokenizer"], setup["tokenizer"], (object(),),
                              (setup["tokenizer_b"],))
    assert run_setup.data_teacher_tokenizer(models) is setup["tokenizer_b"]
    assert run_setup.teacher_prefixes(method, models) == ("", "teacher_")


def test_a_one_teacher_method_refuses_extra_teachers(setup, tmp_path):
    config = tiny_setup.tiny_config(setup, "kd", **{"teacher.extra_paths": setup["teacher_b"]})
    with pytest.raises(ConfigError, match=r"teacher.extra_paths names 1 more teacher\(s\), but method 'kd' takes one"):
        trainer.run(config, str(tmp_path))


def test_path_errors_name_the_field(setup, tmp_path):
    config = multi_config(setup, **{"teacher.extra_paths": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="teacher.extra_paths"):
        config_checks.check_model_paths(config)
    config = multi_config(setup, **{"teacher.extra_paths": setup["teacher_b"],
                                    "teacher.extra_tokenizers": "a,b"})
    with pytest.raises(ConfigError, match=r"teacher.extra_tokenizers names 2 tokenizers for 1 teacher.extra_paths"):
        run_setup.extra_teacher_paths(config)
    config = multi_config(setup, **{"teacher.extra_paths": setup["teacher_b"]})
    config.method.weights = "0.2,0.3,0.5"
    with pytest.raises(ValueError, match=r"method.weights has 3 entries but the run has 2 teacher\(s\)"):
        make_method(config.method, run_setup.model_facts(config, setup["tokenizer"]))


def test_the_config_file_names_both_demo_teachers():
    config = load_repo_config("multi_teacher")
    assert config.teacher.path == "demo:teacher" and config.teacher.extra_paths == "demo:teacher_b"
    assert config.method.weights == "0.5,0.5" and config.method.combination == "mixture"
