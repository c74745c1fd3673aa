"""ImitKD: forward KL towards the teacher per response token; a rising share of student samples."""

import numpy as np
import pytest

from jdistill.methods import data_policy as dp
from jdistill.methods import imitkd
from jdistill.methods import make_method
from tests.losses import numpy_reference as ref
from tests.methods.test_gkd import loss_and_reference, method_config


def test_loss_is_the_configured_divergence_over_the_global_token_count():
    config = method_config(name="imitkd", divergence="forward_kl")
    loss, kd, want = loss_and_reference(make_method(config), ref.forward_kl, seed=1)
    np.testing.assert_allclose([loss, kd], [want, want], rtol=1e-5)


def test_the_chance_of_student_samples_rises_linearly_over_training():
    method = make_method(method_config(name="imitkd", student_probability=0.0, student_probability_end=1.0))
    policy = method.data_policy
    assert isinstance(policy, dp.StudentSamples) and not policy.teacher_samples
    np.testing.assert_allclose([policy.probability(p) for p in (0.0, 0.25, 1.0, 2.0)], [0.0, 0.25, 1.0, 1.0])


def test_probabilities_outside_the_unit_interval_name_the_field():
    with pytest.raises(ValueError, match="method.student_probability_end"):
        make_method(method_config(name="imitkd", student_probability_end=-0.1))
