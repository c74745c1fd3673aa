"""DSKD with cross-model attention: terms against numpy, gradient flow, masking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill import losses
from jdistill.methods.projectors import init_cross_model_attention_params
from jdistill.engine.defaults import base_config
from jdistill.methods import make_method
from tests.losses import numpy_reference as ref
from tests.methods import views

B, TS, TT, DS, DT, VS, VT = 2, 5, 6, 4, 6, 7, 9


def method_config(**overrides):
    c = base_config("dskd_cma").method
    c.temperature = 2.0
    for k, v in overrides.items():
        c[k] = v
    return c


@pytest.fixture(scope="module")
def case():
    ks = jax.random.split(jax.random.key(3), 5)
    student = views.random_side(ks[0], B, TS, DS, VS)
    teacher = views.random_side(ks[1], B, TT, DT, VT)
    params = init_cross_model_attention_params(ks[2], student_dim=DS, teacher_dim=DT)
    s = views.side_arrays(np.asarray(jax.random.randint(ks[3], (B, TS), 0, VS)), [2, 2], [5, 4])
    t = views.side_arrays(np.asarray(jax.random.randint(ks[4], (B, TT), 0, VT)), [3, 2], [6, 4])
    batch = {**s, **{f"teacher_{k}": v for k, v in t.items()}}
    return student, teacher, params, batch


def run(params, batch, student, teacher, n=7.0, **overrides):
    method = make_method(method_config(**overrides))
    return method.loss(params, batch, views.view(student), views.view(teacher), views.context(n))


@pytest.mark.parametrize("divergence,std_over", [("forward_kl", "all"), ("reverse_kl", "all"),
                                                  ("forward_kl", "response")])
def test_terms_match_numpy(case, divergence, std_over):
    student, teacher, params, batch = case
    total, metrics = run(params, batch, student, teacher, divergence=divergence, cma_std_over=std_over)
    zs = np.asarray(student["hidden"] @ student["head"])
    zt = np.asarray(teacher["hidden"] @ teacher["head"])
    want = ref.dskd_cma_terms(
        params, student["embed"], teacher["embed"], student["head"], teacher["head"],
        batch["input_ids"], batch["targets"], batch["teacher_input_ids"], batch["teacher_targets"],
        student["hidden"], teacher["hidden"], zs, zt, batch["loss_mask"], batch["teacher_loss_mask"], 7.0,
        divergence=getattr(ref, divergence), temperature=2.0, std_over=std_over,
    )
    np.testing.assert_allclose((metrics["ce_t2s"], metrics["kd_stu"], metrics["kd_tea"]), want, rtol=2e-5, atol=1e-6)
    ce = ref.token_mean(ref.cross_entropy(zs, batch["targets"]), batch["loss_mask"], 7.0)
    np.testing.assert_allclose(total, 0.5 * ce + 0.5 * sum(want), rtol=2e-5)


def test_gate_selects_gold_predictions(case):
    """The gate is 1 exactly where numpy's projected teacher predicts the gold token."""
    student, teacher, params, batch = case
    _, metrics = run(params, batch, student, teacher)
    es = np.asarray(student["embed"])
    et = np.asarray(teacher["embed"])
    ms, mt = batch["loss_mask"] > 0, batch["teacher_loss_mask"] > 0
    formal = lambda ids, mask: np.where(mask, ids, 0)  # noqa: E731  (DSKD's formal_* ids)
    t2s, _, _, _ = ref.cross_model_attention(
        params, es[formal(batch["input_ids"], ms)], es[formal(batch["targets"], ms)], student["hidden"], ms,
        et[formal(batch["teacher_input_ids"], mt)], et[formal(batch["teacher_targets"], mt)], teacher["hidden"], mt)
    gate = (t2s @ np.asarray(student["head"], np.float64)).argmax(-1) == batch["targets"]
    np.testing.assert_allclose(metrics["t2s_acc"], ref.token_mean(gate, batch["loss_mask"], 7.0), rtol=1e-6)


def _grads(case, term):
    student, teacher, params, batch = case
    f = lambda p, s, t: run(p, batch, s, t)[1][term]  # noqa: E731
    return jax.grad(f, argnums=(0, 1, 2))(params, student, teacher)


def _norm(tree):
    return float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree)))


def test_gradient_flow(case):
    student, teacher, params, batch = case
    p_ce, s_ce, t_ce = _grads(case, "ce_t2s")
    p_tea, s_tea, t_tea = _grads(case, "kd_tea")
    p_stu, s_stu, t_stu = _grads(case, "kd_stu")
    assert _norm(t_ce) == _norm(t_tea) == _norm(t_stu) == 0.0  # the teacher gets none
    assert _norm(p_ce["query"]) > 0 and _norm(p_tea["query"]) > 0  # query from both terms
    assert _norm(p_ce["t2s"]) > 0 and _norm(p_tea["t2s"]) == 0 and _norm(p_stu["t2s"]) == 0
    assert _norm(p_ce["s2t"]) == 0 and _norm(p_tea["s2t"]) > 0
    assert _norm(p_stu) == 0.0  # student-space KD trains the student only
    assert run(params, batch, student, teacher)[1]["t2s_acc"] > 0  # the gate is open somewhere here
    assert _norm(s_stu["hidden"]) > 0 and _norm(s_stu["head"]) > 0
    assert _norm(s_ce) == 0.0  # student head (and everything student) stop-gradient in the t2s path
    assert _norm(s_tea["hidden"]) > 0 and _norm(s_tea["head"]) == 0 and _norm(s_tea["embed"]) == 0


def test_padding_and_prompt_positions_are_never_attended(case):
    """With response-only stds, changing anything at non-response positions of either side changes nothing."""
    student, teacher, params, batch = case
    _, want = run(params, batch, student, teacher, cma_std_over="response")
    s_out = jnp.asarray(batch["loss_mask"] == 0)[..., None]
    t_out = jnp.asarray(batch["teacher_loss_mask"] == 0)[..., None]
    student2 = {**student, "hidden": jnp.where(s_out, 50.0, student["hidden"])}
    teacher2 = {**teacher, "hidden": jnp.where(t_out, -50.0, teacher["hidden"])}
    batch2 = dict(batch)
    t_ids = batch["teacher_input_ids"].copy()
    t_ids[batch["teacher_loss_mask"] == 0] = 0
    batch2["teacher_input_ids"] = t_ids
    _, got = run(params, batch2, student2, teacher2, cma_std_over="response")
    # The masked std is over response positions only, so nothing changes.
    for k in ("ce_t2s", "kd_stu", "kd_tea"):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, err_msg=k)


def test_all_position_stds_read_id_zero_outside_the_response(case):
    """DSKD's stds ('all'): token ids outside the response do not matter (id 0 is looked up there, as the
    release's formal ids), but the teacher's hidden states at padding and prompt positions do."""
    student, teacher, params, batch = case
    _, want = run(params, batch, student, teacher, cma_std_over="all")
    batch2 = dict(batch)
    for key in ("teacher_input_ids", "teacher_targets", "input_ids", "targets"):
        mask = batch["teacher_loss_mask"] if key.startswith("teacher") else batch["loss_mask"]
        batch2[key] = np.where(mask > 0, batch[key], (batch[key] + 3) % 5)
    _, same = run(params, batch2, student, teacher, cma_std_over="all")
    for k in ("ce_t2s", "kd_stu", "kd_tea"):
        np.testing.assert_allclose(same[k], want[k], rtol=1e-5, err_msg=k)
    t_out = jnp.asarray(batch["teacher_loss_mask"] == 0)[..., None]
    teacher2 = {**teacher, "hidden": jnp.where(t_out, 3.0 * teacher["hidden"], teacher["hidden"])}
    _, moved = run(params, batch, student, teacher2, cma_std_over="all")
    assert abs(float(moved["ce_t2s"]) - float(want["ce_t2s"])) > 1e-4


def test_is_cross_vocabulary():
    method = make_method(method_config())
    assert method.cross_vocabulary and method.needs_teacher and method.init_params is not None
