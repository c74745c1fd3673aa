"""Each method's config runs a few steps on the 8-device CPU mesh (tiny local models).

The cross-vocabulary runs use tiny_setup's second tokenizer (digits split,
no BOS) for the teacher, standing in for the demo's tokenizer B, whose teacher
takes minutes to train.
"""

import numpy as np
import pytest

from jdistill.engine import run_setup, trainer
from jdistill.engine.run_setup import ConfigError
from tests.engine import tiny_setup
from tests.repo_configs import load_repo_config

CROSS_VOCABULARY_CONFIGS = ("dskd_cma", "uld", "mined", "eta")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_setup.make_cross_setup(tmp_path_factory.mktemp("cross"))


def config_file_method(name):
    return load_repo_config(name).method


def run_config(setup, workdir, name, cross):
    file_method = config_file_method(name)
    config = tiny_setup.tiny_config(setup, name, **{"train.steps": 4, "eval.generate": False})
    config.method = file_method  # the config file's method settings, on tiny models
    if "vocab_map_dir" in config.method:
        config.method.vocab_map_dir = str(workdir / "vocab_maps")  # MinED's cache, kept out of ~/.cache
    if cross:
        config.teacher.path = setup["teacher_b"]
    return trainer.run(config, str(workdir))


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,cross",
    [("dskd", False), ("logit_std_kd", False), ("speculative_kd", False), ("minillm", False), ("dskd_cma", True), ("uld", True), ("mined", True), ("eta", True)],
)
def test_config_runs(setup, tmp_path, name, cross):
    result = run_config(setup, tmp_path, name, cross)
    assert result.steps == 4 and result.skipped_steps == 0
    assert np.isfinite(result.final_eval["loss"])
    expected = {"speculative_kd": {"kd"}, "minillm": {"pg", "single_step_reverse_kl"}}.get(name, {"ce", "kd"})
    assert expected <= set(result.final_eval)
    if cross and name in ("mined", "eta"):  # their host-side alignments reached the loss
        assert result.final_eval["aligned"] > 0.3


def test_same_vocabulary_method_names_the_cross_vocabulary_configs(setup, tmp_path):
    config = tiny_setup.tiny_config(setup, "dskd", **{"teacher.path": setup["teacher_b"]})
    with pytest.raises(ConfigError) as error:
        trainer.run(config, str(tmp_path))
    for name in CROSS_VOCABULARY_CONFIGS:
        assert f"configs/{name}.py" in str(error.value)


@pytest.mark.slow
def test_dskd_with_a_padded_teacher_head(setup, tmp_path):
    """A teacher head padded beyond the tokenizer (Qwen2.5-7B style) is compared over the shared rows."""
    padded = tiny_setup.make_model_dir(
        tmp_path / "padded_teacher", setup["tokenizer"], hidden=48, seed=4, vocab_size=len(setup["tokenizer"]) + 5
    )
    config = tiny_setup.tiny_config(
        setup, "dskd", **{"teacher.path": str(padded), "train.steps": 2, "eval.generate": False}
    )
    result = trainer.run(config, str(tmp_path / "work"))
    assert result.steps == 2 and np.isfinite(result.final_eval["kd_tea"])
    # The config is read, never written: the shared rows come from the tokenizer (the run's ModelFacts).
    assert config.method.vocab_size == 0
    assert run_setup.model_facts(config, setup["tokenizer"]).vocab_size == len(setup["tokenizer"])
