"""Each on-policy config trains on the 8-device CPU mesh with real generation (tiny local models).

The method settings come from the config files themselves; only sizes (and,
where a coin flip could skip it, the chance of student samples) are changed
so that every run includes an on-policy generation round. 16 training
examples in batches of 8: two steps per epoch.
"""

import json
import os

import numpy as np
import pytest

from jdistill.engine import trainer
from jdistill.engine.checkpointing import Checkpointer
from jdistill.methods import data_policy as dp
from jdistill.sampling.decode import decode
from tests.engine import tiny_setup
from tests.repo_configs import load_repo_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_setup.make_setup(tmp_path_factory.mktemp("on_policy"), n_train=16)


def config_for(setup, name, **overrides):
    file_config = load_repo_config(name)
    config = tiny_setup.tiny_config(setup, name, **{
        "train.steps": 2, "eval.generate": False, "train.export_hf": False, "data.buckets": "32",
        "logging.every": 1,
    })
    config.method = file_config.method  # the config file's method and sampling settings, on tiny models
    config.on_policy = file_config.on_policy
    config.on_policy.max_new_tokens = 6
    config.on_policy.batch_size = 16
    for key, value in overrides.items():
        group, field = key.split(".")
        config[group][field] = value
    return config


def records(workdir, split):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["split"] == split]


@pytest.mark.slow
def test_distillm2_two_epochs_with_a_resume_inside_the_second(setup, tmp_path):
    config = config_for(setup, "distillm2", **{"train.steps": 4})
    workdir = str(tmp_path)
    programs = decode._cache_size()
    first = trainer.run(config, workdir, max_steps_this_run=3)  # stops inside epoch 1
    assert decode._cache_size() == programs + 2  # one sampler program per model, for both epochs
    assert first.steps == 3
    train = records(workdir, "train")
    epoch0 = [r for r in train if r["step"] <= 2]
    assert all(r["data_source"] == 4 and r["curriculum_on"] == 0 and r["alpha_teacher_responses"] == pytest.approx(0.1)
               for r in epoch0)
    reference = [np.mean([r[k] for r in epoch0]) for k in dp.GAP_METRICS]
    checkpoint = Checkpointer(os.path.join(workdir, "checkpoints"))
    saved = checkpoint.restore(3, first.state)[2]["on_policy"]
    checkpoint.close()
    np.testing.assert_allclose(saved["reference_gap"], reference, rtol=1e-5)
    assert train[-1]["curriculum_on"] == 1 and os.path.exists(os.path.join(workdir, "on_policy", "epoch_1.npz"))

    resumed = trainer.run(config, workdir)  # reads the reference gap and epoch 1's responses back
    assert resumed.steps == 4 and resumed.skipped_steps == 0 and np.isfinite(resumed.final_eval["loss"])
    last = records(workdir, "train")[-1]
    assert last["step"] == 4 and last["curriculum_on"] == 1
    assert config.method.alpha_min <= last["alpha_teacher_responses"] <= 0.1
    assert last["beta"] == pytest.approx(1.5)  # the release's gradual β: 1 + 0.5 min(1, 2 · 3/4)
    shares = records(workdir, "on_policy")
    assert {r["epoch"] for r in shares} == {0, 1} and all(0 < r["generation_share"] <= 1 for r in shares)


@pytest.mark.slow
@pytest.mark.parametrize("name,overrides,sources", [
    ("gkd", {"method.student_probability": 1.0}, {1}),
    ("imitkd", {"method.student_probability": 1.0}, {1}),
    ("distillm", {"method.phi_init": 1.0, "method.replay_capacity": 8}, {1, 3}),
])
def test_step_sampling_configs_train_on_student_samples(setup, tmp_path, name, overrides, sources):
    config = config_for(setup, name, **overrides)
    programs = decode._cache_size()
    result = trainer.run(config, str(tmp_path))
    assert decode._cache_size() <= programs + 1  # the student sampler program: at most one compile (or reused)
    assert result.steps == 2 and result.skipped_steps == 0 and np.isfinite(result.final_eval["loss"])
    train = records(str(tmp_path), "train")
    assert train[0]["data_source"] == 1 and train[0]["steps_on_student_samples"] == 1
    assert {r["data_source"] for r in train} <= sources
    assert all(r["response_tokens"] > 0 for r in train)
    if name == "distillm":
        # The step-0 evaluation sets the reference validation CE (the release's prev_avg_loss).
        first = records(str(tmp_path), "on_policy")[0]
        assert first["step"] == 0 and first["phi"] == 1.0 and np.isfinite(first["reference_validation_loss"])
        final_ce = records(str(tmp_path), "eval")[-1]["student_ce"]
        assert np.isfinite(final_ce) and final_ce > 0
