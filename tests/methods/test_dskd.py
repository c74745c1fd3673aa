"""DSKD (same vocabulary): every term against numpy, and where the gradients go."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jdistill.engine.defaults import base_config
from jdistill.methods import dskd, make_method
from jdistill.methods.projectors import init_dual_space_projectors, pseudo_inverse_t2s_kernel
from jdistill.methods import make_method
from tests.losses import numpy_reference as ref
from tests import fake_models as views

B, T, DS, DT, V = 2, 5, 4, 6, 7


def method_config(**overrides) -> ml_collections.ConfigDict:
    c = base_config("dskd").method
    c.temperature = 2.0
    for k, v in overrides.items():
        c[k] = v
    return c


@pytest.fixture(scope="module")
def case():
    ks = jax.random.split(jax.random.key(0), 4)
    student = views.random_side(ks[0], B, T, DS, V)
    teacher = views.random_side(ks[1], B, T, DT, V)
    params = init_dual_space_projectors(ks[2], student_dim=DS, teacher_dim=DT)
    ids = np.asarray(jax.random.randint(ks[3], (B, T), 0, V))
    batch = views.side_arrays(ids, prompt_lens=[2, 1], lengths=[5, 3])
    return student, teacher, params, batch


def run(method, params, batch, student, teacher, n=None):
    n = n if n is not None else float(batch["loss_mask"].sum()) + 1.0  # a "global" count
    return method.loss(params, batch, views.view(student), views.view(teacher), views.context(n))


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl"])
def test_terms_match_numpy(case, divergence):
    student, teacher, params, batch = case
    method = make_method(method_config(divergence=divergence))
    n = float(batch["loss_mask"].sum()) + 1.0
    total, metrics = run(method, params, batch, student, teacher, n)
    zs = np.asarray(student["hidden"] @ student["head"])
    zt = np.asarray(teacher["hidden"] @ teacher["head"])
    want = ref.dskd_terms(
        params, student["hidden"], teacher["hidden"], student["head"], teacher["head"], zs, zt,
        batch["targets"], batch["loss_mask"], n, divergence=getattr(ref, divergence), temperature=2.0,
    )
    got = (metrics["ce_t2s"], metrics["kd_stu"], metrics["kd_tea"])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    ce = ref.token_mean(ref.cross_entropy(zs, batch["targets"]), batch["loss_mask"], n)
    np.testing.assert_allclose(total, 0.5 * ce + 0.5 * sum(want), rtol=1e-5)


@pytest.mark.parametrize("weight", [0.0, 0.25])
def test_teacher_space_weight_scales_the_teacher_space_term(case, weight):
    student, teacher, params, batch = case
    n = float(batch["loss_mask"].sum()) + 1.0
    _, full = run(make_method(method_config()), params, batch, student, teacher, n)
    total, metrics = run(make_method(method_config(teacher_space_weight=weight)), params, batch, student, teacher, n)
    want_kd = full["kd_stu"] + full["ce_t2s"] + weight * full["kd_tea"]
    np.testing.assert_allclose(metrics["kd"], want_kd, rtol=1e-6)
    np.testing.assert_allclose(total, 0.5 * full["ce"] + 0.5 * want_kd, rtol=1e-6)
    assert abs(float(metrics["kd"]) - float(full["kd"])) > 1e-3  # the term is not negligible in this case


def _term_grads(case, term):
    student, teacher, params, batch = case
    method = make_method(method_config())

    def f(params, student, teacher):
        return run(method, params, batch, student, teacher)[1][term]

    return jax.grad(f, argnums=(0, 1, 2))(params, student, teacher)


def _norm(tree):
    return float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree)))


def test_gradient_flow(case):
    p_ce, s_ce, t_ce = _term_grads(case, "ce_t2s")
    p_stu, s_stu, t_stu = _term_grads(case, "kd_stu")
    p_tea, s_tea, t_tea = _term_grads(case, "kd_tea")
    # The teacher never gets a gradient.
    assert _norm(t_ce) == _norm(t_stu) == _norm(t_tea) == 0.0
    # P_t2s only from L_ce_t2s; the student (head included) gets nothing from it.
    assert _norm(p_ce["t2s"]) > 0 and _norm(p_stu["t2s"]) == 0 and _norm(p_tea["t2s"]) == 0
    assert _norm(s_ce) == 0.0
    # L_kd_stu trains only the student.
    assert _norm(p_stu) == 0.0 and _norm(s_stu["head"]) > 0 and _norm(s_stu["hidden"]) > 0
    # L_kd_tea trains P_s2t and the student's hidden states through the frozen teacher head.
    assert _norm(p_tea["s2t"]) > 0 and _norm(s_tea["hidden"]) > 0 and _norm(s_tea["head"]) == 0


def test_padded_teacher_head_is_truncated(case):
    student, teacher, params, batch = case
    padded = dict(teacher)
    padded["head"] = jnp.concatenate([teacher["head"], 5.0 * jnp.ones((DT, 3))], axis=1)
    method = make_method(method_config(vocab_size=V))
    want = run(method, params, batch, student, teacher)
    got = run(method, params, batch, student, padded)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)


def test_prompt_and_padding_positions_do_not_count(case):
    student, teacher, params, batch = case
    method = make_method(method_config())
    outside = jnp.asarray(batch["loss_mask"] == 0)[..., None]
    noisy = {**student, "hidden": jnp.where(outside, 100.0, student["hidden"])}
    np.testing.assert_allclose(run(method, params, batch, noisy, teacher)[0],
                               run(method, params, batch, student, teacher)[0], rtol=1e-6)


def test_init_params_shapes():
    method = make_method(method_config())
    cfg = lambda d: ml_collections.ConfigDict({"config": {"hidden_size": d}})  # noqa: E731  (a model's .config)
    params = method.init_params(jax.random.key(0), cfg(DS), cfg(DT))
    assert params["t2s"]["kernel"].shape == (DT, DS) and params["s2t"]["kernel"].shape == (DS, DT)


def test_pseudo_inverse_kernel_reproduces_teacher_logits():
    ks = jax.random.split(jax.random.key(1), 3)
    w_s = jax.random.normal(ks[0], (DS, V))
    w_t = jax.random.normal(ks[1], (DT, V))
    kernel = pseudo_inverse_t2s_kernel(w_s, w_t)
    h_t = jax.random.normal(ks[2], (3, DT))
    # Least squares: the residual is orthogonal to the student head's row space.
    residual = h_t @ kernel @ w_s - h_t @ w_t
    np.testing.assert_allclose(residual @ w_s.T, 0.0, atol=1e-3)


def test_rejects_bad_kd_rate():
    with pytest.raises(ValueError, match="kd_rate"):
        make_method(method_config(kd_rate=1.5))


class _HeadModel:
    """A loaded model as init_params sees it: ``.config.hidden_size`` and ``lm_head_weight()``."""

    def __init__(self, head_DxV):
        self.head = jnp.asarray(head_DxV, jnp.float32)
        self.config = ml_collections.ConfigDict({"hidden_size": self.head.shape[0]})

    def lm_head_weight(self):
        return self.head


def test_pseudo_inverse_init_reads_teacher_logits_out_of_the_student_head(case):
    """With the teacher head in the student head's row space, h_t K W_s = h_t W_t exactly (DSKDv2)."""
    _, _, _, batch = case
    rng = np.random.default_rng(0)
    w_s = rng.normal(size=(DS, V))
    w_t = rng.normal(size=(DT, DS)) @ w_s  # rank <= d_s, inside the student head's row space
    method = make_method(method_config(projector_init="pseudo_inverse", vocab_size=V))
    params = method.init_params(jax.random.key(0), _HeadModel(w_s), _HeadModel(w_t))
    assert set(params["t2s"]) == {"kernel"}  # bias-free
    assert params["s2t"]["kernel"].shape == (DS, DT) and params["s2t"]["bias"].shape == (DT,)
    h_t = rng.normal(size=(B, T, DT))
    np.testing.assert_allclose(h_t @ np.asarray(params["t2s"]["kernel"]) @ w_s, h_t @ w_t, rtol=1e-3, atol=1e-3)
    # Through the loss: the student-space CE of the projected teacher is the teacher's own CE.
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    student = {"hidden": f32(rng.normal(size=(B, T, DS))), "head": f32(w_s), "embed": jnp.zeros((V, DS))}
    teacher = {"hidden": f32(h_t), "head": f32(w_t), "embed": jnp.zeros((V, DT))}
    n = float(batch["loss_mask"].sum())
    _, metrics = run(method, params, batch, student, teacher, n)
    teacher_ce = ref.token_mean(ref.cross_entropy(h_t @ w_t, batch["targets"]), batch["loss_mask"], n)
    np.testing.assert_allclose(metrics["ce_t2s"], teacher_ce, rtol=1e-3)


def test_pseudo_inverse_init_is_the_least_squares_map():
    rng = np.random.default_rng(1)
    w_s, w_t = rng.normal(size=(DS, V + 2)), rng.normal(size=(DT, V + 2))  # heads padded by 2 rows
    method = make_method(method_config(projector_init="pseudo_inverse", vocab_size=V))
    kernel = np.asarray(method.init_params(jax.random.key(0), _HeadModel(w_s), _HeadModel(w_t))["t2s"]["kernel"])
    # argmin_K ||K W_s - W_t|| over the V shared rows, by numpy's least squares on the transposed system.
    want = np.linalg.lstsq(w_s[:, :V].T, w_t[:, :V].T, rcond=None)[0].T
    np.testing.assert_allclose(kernel, want, rtol=1e-3, atol=1e-4)


def test_rejects_an_unknown_projector_init():
    with pytest.raises(ValueError, match="method.projector_init"):
        make_method(method_config(projector_init="xavier"))
