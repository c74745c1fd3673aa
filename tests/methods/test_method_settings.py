"""Every method that mixes CE with a distillation term, or softens logits, rejects bad settings the same way."""

import pytest

from jdistill import methods
from tests.repo_configs import load_repo_config


def method_config(name):
    return load_repo_config(name).method


# The methods whose loss is (1 - kd_rate) * CE + kd_rate * KD (a new one should join this list).
MIXING = ["dskd", "dskd_cma", "eta", "feature_kd", "kd", "logit_std_kd", "mined", "multi_teacher", "online_kd",
          "relation_kd", "self_distill", "sparse_kd", "uld"]
# The methods that soften logits by method.temperature (sparse_kd's stored targets are at temperature 1).
SOFTENING = ["distillm", "distillm2", "dskd", "dskd_cma", "eta", "feature_kd", "gkd", "imitkd", "kd", "logit_std_kd",
             "mined", "multi_teacher", "online_kd", "relation_kd", "self_distill", "speculative_kd", "uld"]
# Pure data methods, and MiniLLM (temperature-1 rewards): they read neither setting.
NEITHER = ["minillm", "seqkd", "sft"]


def test_the_lists_cover_the_registry():
    assert sorted(set(MIXING) | set(SOFTENING) | set(NEITHER)) == sorted(methods.METHODS)


BAD_SETTINGS = [(name, "kd_rate", value, r"method.kd_rate must lie in \[0, 1\], got")
                for name in MIXING for value in (-0.1, 1.5)]
BAD_SETTINGS += [(name, "temperature", value, r"method.temperature must be > 0, got")
                 for name in SOFTENING for value in (0.0, -1.0)]


@pytest.mark.parametrize("name,field,value,message", BAD_SETTINGS)
def test_bad_setting_is_rejected(name, field, value, message):
    config = method_config(name)
    config[field] = value
    with pytest.raises(ValueError, match=message):
        methods.make_method(config)


@pytest.mark.parametrize("name", MIXING)
def test_kd_rate_at_the_bounds_is_accepted(name):
    for kd_rate in (0.0, 1.0):
        config = method_config(name)
        config.kd_rate = kd_rate
        assert methods.make_method(config).name == name


@pytest.mark.parametrize("name", NEITHER + ["sparse_kd"])
def test_methods_without_a_temperature_have_no_such_setting(name):
    """A setting the method does not read is an error naming its settings, never silently ignored."""
    config = method_config(name)
    assert "temperature" not in config
    config.temperature = 0.0
    with pytest.raises(ValueError, match=r"'method.temperature' is not a setting of .*Its settings: .*vocab_size"):
        methods.make_method(config)


def test_every_setting_has_a_help_line():
    for name in methods.METHODS:
        for key, _, help_line in methods.settings_help(name):
            assert key.startswith("method.") and help_line, (name, key)


# The choice settings methods read (cross-vocabulary alignment, named feature and relation
# formulations), with the values each accepts and the error for a bad one.
CHOICES = [
    ("eta", "eta_span_merge", ("chain_rule", "observed", "mean")),
    ("eta", "eta_matched_loss", ("gold", "bucket")),
    ("dskd_cma", "cma_std_over", ("all", "response")),
    ("mined", "mined_markers", ("delete", "space")),
    ("mined", "mined_one_to_one", ("student", "both")),
    ("relation_kd", "relation_loss", ("cosine_mse", "rkd", "sp")),
    ("feature_kd", "feature_distance", ("cosine", "mse", "fitnets")),
    ("feature_kd", "attention_loss", ("kl", "minilm")),
    ("feature_kd", "attention_heads", ("mean", "mapped")),
]


@pytest.mark.parametrize("name,field,allowed", CHOICES)
def test_choice_settings_accept_their_values_and_name_the_field_otherwise(name, field, allowed):
    for value in allowed:
        config = method_config(name)
        config[field] = value
        assert methods.make_method(config).name == name
    config = method_config(name)
    config[field] = "nonsense"
    with pytest.raises(ValueError, match=rf"method\.{field} must be one of .*{allowed[0]}.*got 'nonsense'"):
        methods.make_method(config)


def test_eta_checks_jsd_beta():
    config = method_config("eta")
    config.jsd_beta = 1.5
    with pytest.raises(ValueError, match=r"method.jsd_beta must lie in \[0, 1\], got 1.5"):
        methods.make_method(config)


@pytest.mark.parametrize("field,value", [("rkd_distance_weight", -0.5), ("rkd_angle_weight", -2.0)])
def test_rkd_weights_must_not_be_negative(field, value):
    config = method_config("relation_kd")
    config.relation_loss = "rkd"
    config[field] = value
    with pytest.raises(ValueError, match=rf"method.{field}"):
        methods.make_method(config)
