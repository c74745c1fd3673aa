"""GKD: generalized JSD per response token on whatever rows the step trains on; its data policy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill.engine.defaults import base_config
from jdistill.methods import data_policy as dp
from jdistill.methods import gkd
from jdistill.methods import make_method
from tests.losses import numpy_reference as ref
from tests.methods import views


def method_config(name="gkd", **overrides):
    c = base_config(name).method
    c.vocab_size, c.fused = 9, "off"
    for key, value in overrides.items():
        c[key] = value
    return c


def sides(seed, rows=3, length=4, dim=5, vocab=9):
    rng = np.random.default_rng(seed)
    return [{"hidden": jnp.asarray(rng.normal(size=(rows, length, dim)), jnp.float32),
             "head": jnp.asarray(rng.normal(size=(dim, vocab)), jnp.float32),
             "embed": jnp.zeros((vocab, dim), jnp.float32)} for _ in range(2)]


def loss_and_reference(method, kernel_reference, seed=0):
    student, teacher = sides(seed)
    mask = np.array([[0, 1, 1, 1], [0, 0, 1, 0], [1, 1, 1, 1]], np.float32)
    batch = {"loss_mask": jnp.asarray(mask)}
    ctx = views.context(num_tokens=20.0)  # the step's global count (other micro-batches hold the rest)
    loss, metrics = jax.jit(lambda b, s, t: method.loss({}, b, views.view(s), views.view(t), ctx))(
        batch, student, teacher)
    zs = np.asarray(student["hidden"], np.float64) @ np.asarray(student["head"], np.float64)
    zt = np.asarray(teacher["hidden"], np.float64) @ np.asarray(teacher["head"], np.float64)
    want = (kernel_reference(zs, zt) * mask).sum() / 20.0
    return float(loss), float(metrics["kd"]), want


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9])
def test_loss_is_the_generalized_jsd_over_the_global_token_count(beta):
    loss, kd, want = loss_and_reference(make_method(method_config(jsd_beta=beta)),
                                        lambda s, t: ref.generalized_jsd(s, t, beta))
    np.testing.assert_allclose([loss, kd], [want, want], rtol=1e-5)


def test_data_policy_takes_lambda_and_seq_kd():
    method = make_method(method_config(student_probability=0.3, seq_kd=True))
    assert method.data_policy == dp.StudentSamples(0.3, 0.3, teacher_samples=True)
    assert method.data_policy.probability(0.9) == pytest.approx(0.3)


def test_settings_that_cannot_work_name_the_field():
    with pytest.raises(ValueError, match="method.divergence=generalized_jsd"):
        make_method(method_config(divergence="forward_kl"))
    with pytest.raises(ValueError, match="method.student_probability"):
        make_method(method_config(student_probability=1.5))
