"""Online distillation (deep mutual learning): each model learns from the other's fixed targets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill.engine.defaults import base_config
from jdistill.methods import make_method
from tests.losses import numpy_reference as ref
from tests.methods import decoder_views as dv
from tests.methods import views


def method_config(**overrides):
    c = base_config("online_kd").method
    for key, value in overrides.items():
        c[key] = value
    return c


def coupled_view(side):
    """A view whose logits are computed from its last hidden state and head (so the fused path agrees)."""
    side = dict(side, logits=side["all_hidden"][-1] @ side["head"])
    return dv.view(side)


@pytest.fixture(scope="module")
def case():
    student = dv.random_side(4, layers=2, width=3, heads=2)
    teacher = dv.random_side(5, layers=3, width=4, heads=2)
    return student, teacher, dv.batch_arrays()


def test_method_trains_its_teacher():
    method = make_method(method_config())
    assert method.teacher_mode == "trained" and method.needs_teacher


def test_loss_matches_numpy(case):
    student, teacher, batch = case
    method = make_method(method_config(kd_rate=0.3))
    n = float(batch["loss_mask"].sum()) + 1.0
    total, metrics = jax.jit(lambda s, t: method.loss({}, batch, dv.view(s), dv.view(t), views.context(n)))(
        student, teacher)
    zs, zt, mask, y = student["logits"], teacher["logits"], batch["loss_mask"], batch["targets"]
    want = {
        "ce": ref.token_mean(ref.cross_entropy(zs, y), mask, n),
        "kd": ref.token_mean(ref.forward_kl(zs, zt), mask, n),  # KL(p_teacher || q_student)
        "teacher_ce": ref.token_mean(ref.cross_entropy(zt, y), mask, n),
        "teacher_kd": ref.token_mean(ref.forward_kl(zt, zs), mask, n),  # KL(q_student || p_teacher)
    }
    np.testing.assert_allclose([metrics[k] for k in want], list(want.values()), rtol=1e-5)
    np.testing.assert_allclose(
        total, 0.7 * (want["ce"] + want["teacher_ce"]) + 0.3 * (want["kd"] + want["teacher_kd"]), rtol=1e-5)


def test_each_model_gets_gradient_only_from_its_own_terms(case):
    """kd_rate = 1: d/dz_s = M (q - p) / N and d/dz_t = M (p - q) / N — each pulled to the other, targets fixed."""
    student, teacher, batch = case
    method = make_method(method_config(kd_rate=1.0))
    n = float(batch["loss_mask"].sum())

    def loss(zs, zt):
        s, t = dict(student, logits=zs), dict(teacher, logits=zt)
        return method.loss({}, batch, dv.view(s), dv.view(t), views.context(n))[0]

    g_s, g_t = jax.jit(jax.grad(loss, argnums=(0, 1)))(student["logits"], teacher["logits"])
    q, p = ref.softmax(student["logits"]), ref.softmax(teacher["logits"])
    mask = batch["loss_mask"][..., None]
    np.testing.assert_allclose(g_s, mask * (q - p) / n, atol=1e-6)
    np.testing.assert_allclose(g_t, mask * (p - q) / n, atol=1e-6)
    assert float(np.abs(g_s).sum()) > 0 and float(np.abs(g_t).sum()) > 0


def test_fused_path_gives_the_same_loss_and_gradients(case):
    student, teacher, batch = case
    n = float(batch["loss_mask"].sum())
    results = []
    for fused in ("off", "on"):
        method = make_method(method_config(fused=fused, vocab_size=7))

        def loss(s, t, method=method):
            return method.loss({}, batch, coupled_view(s), coupled_view(t), views.context(n))[0]

        results.append(jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(student, teacher))
    (v_off, (gs_off, gt_off)), (v_on, (gs_on, gt_on)) = results
    np.testing.assert_allclose(v_on, v_off, rtol=1e-5)
    for key in ("head", "all_hidden"):
        np.testing.assert_allclose(gs_on[key], gs_off[key], atol=1e-5)
        np.testing.assert_allclose(gt_on[key], gt_off[key], atol=1e-5)
