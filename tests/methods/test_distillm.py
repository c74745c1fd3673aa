"""DistiLLM: skew KL / skew reverse KL per response token; the adaptive off-policy settings."""

import numpy as np
import pytest

from jdistill.methods import data_policy as dp
from jdistill.methods import distillm
from jdistill.methods import make_method
from tests.losses import numpy_reference as ref
from tests.methods.test_gkd import loss_and_reference, method_config


@pytest.mark.parametrize("divergence,reference", [
    ("skew_forward_kl", lambda s, t: ref.skew_forward_kl(s, t, 0.2)),
    ("skew_reverse_kl", lambda s, t: ref.skew_reverse_kl(s, t, 0.2)),
])
def test_loss_is_the_skew_divergence_over_the_global_token_count(divergence, reference):
    config = method_config(name="distillm", divergence=divergence, skew_alpha=0.2)
    loss, kd, want = loss_and_reference(make_method(config), reference, seed=2)
    np.testing.assert_allclose([loss, kd], [want, want], rtol=1e-5)


def test_replay_settings_come_from_the_config():
    config = method_config(name="distillm", divergence="skew_forward_kl", replay_capacity=64, phi_init=0.2,
                           phi_increment=0.05, phi_trigger=0.3)
    assert make_method(config).data_policy == dp.AdaptiveReplay(64, 0.2, 0.05, 0.3)


def test_settings_that_cannot_work_name_the_field():
    with pytest.raises(ValueError, match="method.divergence"):
        make_method(method_config(name="distillm", divergence="forward_kl"))
    with pytest.raises(ValueError, match="method.replay_capacity"):
        make_method(method_config(name="distillm", divergence="skew_forward_kl", replay_capacity=0))
