"""Multi-teacher distillation: both combination rules against float64 numpy transcriptions, weight 0 = KD, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill.engine.defaults import base_config
from jdistill.methods import ModelFacts, make_method, multi_teacher
from tests import fake_models as views

B, T, V, TB, VB = 2, 5, 7, 6, 9  # student/teacher-A batch, length, vocabulary; teacher B's length and vocabulary


# ----------------------------------------------------------------------------- numpy float64 references


def log_softmax(z, temperature):
    z = np.asarray(z, np.float64) / temperature
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def kl(log_p, log_q):
    """``Σ_v p_v (log p_v − log q_v)`` per row."""
    return np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)


def divergence(name, log_p, log_q):
    """``D(p_teacher, q_student)`` per row: forward KL(p‖q) or reverse KL(q‖p)."""
    return kl(log_p, log_q) if name == "forward_kl" else kl(log_q, log_p)


def log_mixture(log_ps, weights):
    """``log Σ_k w_k p_k`` as a log-sum-exp over the teachers (zero weights left out)."""
    terms = [np.log(w) + lp for lp, w in zip(log_ps, weights) if w > 0]
    return np.logaddexp.reduce(np.stack(terms), axis=0)


def uld(log_q, log_p):
    """``Σ_r |sort↓(q)_r − sort↓(p)_r|``, the shorter vector zero-padded."""
    q, p = -np.sort(-np.exp(log_q)), -np.sort(-np.exp(log_p))
    size = max(q.size, p.size)
    return np.abs(np.pad(q, (0, size - q.size)) - np.pad(p, (0, size - p.size))).sum()


def cross_entropy(z, targets):
    return -np.take_along_axis(log_softmax(z, 1.0), targets[..., None], -1)[..., 0]


def reference_loss(z_s, same, other, weights, batch, *, combination, name="forward_kl", tau=2.0, kd_rate=0.5):
    """The documented loss. ``same``: ``[(index, logits)]`` of same-vocabulary teachers; ``other``: the others'."""
    mask, n = batch["loss_mask"].astype(np.float64), batch["loss_mask"].sum()
    lq = log_softmax(z_s, tau)
    kd = 0.0
    if combination == "sum":
        for k, z in same:
            kd += weights[k] * np.sum(mask * divergence(name, log_softmax(z, tau), lq)) / n
    else:
        total = sum(weights[k] for k, _ in same)
        if total > 0:
            lp = log_mixture([log_softmax(z, tau) for _, z in same], [weights[k] / total for k, _ in same])
            kd += total * np.sum(mask * divergence(name, lp, lq)) / n
    for k, z in other:
        paired = 0.0
        for b in range(B):
            for i in range(T):
                if batch["uld_mask"][b, i]:
                    paired += uld(lq[b, i], log_softmax(z[b, batch["uld_teacher_index"][b, i]], tau))
        kd += weights[k] * paired / n
    ce = np.sum(mask * cross_entropy(z_s, batch["targets"])) / n
    return (1 - kd_rate) * ce + kd_rate * kd, kd


# ----------------------------------------------------------------------------- cases


def side(rng, length, vocab, dim=6):
    draw = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    return {"hidden": draw(B, length, dim), "head": draw(dim, vocab) * 1.5, "embed": draw(vocab, dim)}


def logits(s):
    return np.asarray(s["hidden"] @ s["head"], np.float64)


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(0)
    batch = views.side_arrays(rng.integers(0, V, size=(B, T)), [2, 2], [5, 4])
    batch["uld_teacher_index"] = np.array([[0, 2, 3, 5, 0], [0, 1, 4, 0, 0]], np.int32)
    batch["uld_mask"] = np.array([[0, 1, 1, 1, 0], [0, 1, 1, 0, 0]], np.float32)
    return {"batch": batch, "student": side(rng, T, V), "a": side(rng, T, V), "a2": side(rng, T, V),
            "b": side(rng, TB, VB)}


def method(facts=(), **settings):
    config = base_config("multi_teacher").method
    for key, value in settings.items():
        config[key] = value
    return make_method(config, ModelFacts(teachers_share_vocabulary=tuple(facts)))


def run(m, case, teachers, num_tokens=None):
    n = float(case["batch"]["loss_mask"].sum()) if num_tokens is None else num_tokens
    teacher_views = tuple(views.view(case[t]) for t in teachers)
    return m.loss(None, case["batch"], views.view(case["student"]), teacher_views, views.context(n))


@pytest.mark.parametrize("combination", ["mixture", "sum"])
@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl"])
def test_two_same_vocabulary_teachers_match_numpy(case, combination, name):
    m = method((True, True), weights="0.3,0.7", combination=combination, divergence=name)
    loss, metrics = run(m, case, ("a", "a2"))
    want, want_kd = reference_loss(logits(case["student"]), [(0, logits(case["a"])), (1, logits(case["a2"]))], [],
                                   (0.3, 0.7), case["batch"], combination=combination, name=name)
    np.testing.assert_allclose(float(metrics["kd"]), want_kd, rtol=2e-5)
    np.testing.assert_allclose(float(loss), want, rtol=2e-5)
    assert not m.cross_vocabulary and m.teacher_list


@pytest.mark.parametrize("combination", ["mixture", "sum"])
def test_a_cross_vocabulary_teacher_adds_its_weighted_uld_term(case, combination):
    """Teachers A, A2 (the student's vocabulary) and B (another one, paired by ULD)."""
    m = method((True, True, False), weights="0.2,0.3,0.5", combination=combination)
    loss, metrics = run(m, case, ("a", "a2", "b"))
    z = {k: logits(case[k]) for k in ("student", "a", "a2", "b")}
    want, want_kd = reference_loss(z["student"], [(0, z["a"]), (1, z["a2"])], [(2, z["b"])], (0.2, 0.3, 0.5),
                                   case["batch"], combination=combination)
    np.testing.assert_allclose(float(metrics["kd"]), want_kd, rtol=2e-5)
    np.testing.assert_allclose(float(loss), want, rtol=2e-5)
    # Each teacher's own unweighted term is reported.
    _, only_b = reference_loss(z["student"], [], [(0, z["b"])], (1.0,), case["batch"], combination="sum")
    np.testing.assert_allclose(float(metrics["kd_teacher2"]), only_b, rtol=2e-5)
    assert m.cross_vocabulary


@pytest.mark.parametrize("combination", ["mixture", "sum"])
def test_a_teacher_of_weight_zero_leaves_single_teacher_kd(case, combination):
    """Weights (1, 0) and (0, 1) give jdistill's KD loss with the weighted teacher alone, on the same batch."""
    kd = make_method(base_config("kd").method)  # forward KL, τ 2, kd_rate 0.5: the multi-teacher defaults
    n = float(case["batch"]["loss_mask"].sum())
    for weights, teachers, facts, alone in (("1,0", ("a", "b"), (True, False), "a"),
                                           ("0,1", ("a", "a2"), (True, True), "a2")):
        loss, metrics = run(method(facts, weights=weights, combination=combination), case, teachers)
        want, want_metrics = kd.loss(None, case["batch"], views.view(case["student"]), views.view(case[alone]),
                                     views.context(n))
        np.testing.assert_allclose(float(loss), float(want), rtol=1e-6)
        np.testing.assert_allclose(float(metrics["kd"]), float(want_metrics["kd"]), rtol=1e-6)


def test_forward_kl_sum_exceeds_mixture_by_the_teachers_disagreement(case):
    """``Σ w_k KL(p_k‖q) − KL(p̄‖q) = Σ w_k KL(p_k‖p̄)`` per token: the two rules differ by that, exactly."""
    weights = (0.4, 0.6)
    mixture = run(method((True, True), weights="0.4,0.6", combination="mixture"), case, ("a", "a2"))[1]["kd"]
    summed = run(method((True, True), weights="0.4,0.6", combination="sum"), case, ("a", "a2"))[1]["kd"]
    mask = case["batch"]["loss_mask"]
    lps = [log_softmax(logits(case[k]), 2.0) for k in ("a", "a2")]
    lp_bar = log_mixture(lps, weights)
    gap = sum(w * np.sum(mask * kl(lp, lp_bar)) for w, lp in zip(weights, lps)) / mask.sum()
    np.testing.assert_allclose(float(summed) - float(mixture), gap, rtol=1e-4, atol=1e-7)


def test_equal_weights_by_default_and_no_gradient_to_the_teachers(case):
    m = method((True, False))
    assert multi_teacher.teacher_weights(multi_teacher.Settings(), 2) == (0.5, 0.5)
    loss, _ = run(m, case, ("a", "b"))
    z = {k: logits(case[k]) for k in ("student", "a", "b")}
    want, _ = reference_loss(z["student"], [(0, z["a"])], [(1, z["b"])], (0.5, 0.5), case["batch"],
                             combination="mixture")
    np.testing.assert_allclose(float(loss), want, rtol=2e-5)
    n = float(case["batch"]["loss_mask"].sum())

    def total(a, b):
        return m.loss(None, case["batch"], views.view(case["student"]), (views.view(a), views.view(b)),
                      views.context(n))[0]

    grads = jax.grad(total, argnums=(0, 1))(case["a"], case["b"])
    assert all(float(jnp.abs(g).sum()) == 0 for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("field,value,message", [
    ("weights", "0.5,0.6", r"method.weights must sum to 1, got '0.5,0.6' \(sum 1.1\)"),
    ("weights", "1.5,-0.5", r"method.weights must all be finite and >= 0"),
    ("weights", "half,half", r"method.weights must be comma-separated numbers"),
    ("combination", "average", r"method.combination must be one of 'mixture' \| 'sum', got 'average'"),
    ("fused", "on", r"method.fused must be one of 'off', got 'on'"),
    ("kd_rate", 1.5, r"method.kd_rate must lie in \[0, 1\]"),
])
def test_bad_settings_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        method(**{field: value})


def test_one_weight_per_teacher(case):
    with pytest.raises(ValueError, match=r"method.weights has 2 entries but the run has 3 teacher\(s\)"):
        method((True, True, False), weights="0.5,0.5")
    m = method((), weights="0.5,0.5")  # made outside a run: checked when the step sees the teachers
    with pytest.raises(ValueError, match=r"method.weights has 2 entries but the run has 3 teacher"):
        run(m, case, ("a", "a2", "a"))


def test_mixture_kernel_is_the_log_of_the_weighted_average():
    """``mixture_log_probs`` vs numpy float64 in log space; a weight of 0 and a ``-inf`` logit (probability 0)."""
    from jdistill.losses import mixture_log_probs

    rng = np.random.default_rng(3)
    z = [rng.normal(size=(2, 3, 5)) * 3 for _ in range(3)]
    z[1][0, 0, 2] = -np.inf
    weights = (0.25, 0.75, 0.0)
    got = np.asarray(mixture_log_probs([jnp.asarray(x, jnp.float32) for x in z], weights, temperature=1.5))

    def log_softmax_masked(x):
        x = x / 1.5
        finite = np.isfinite(x)
        shifted = np.where(finite, x - x[finite].max(), -np.inf)
        return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))

    want = np.logaddexp.reduce(np.stack([np.log(0.25) + log_softmax_masked(z[0]),
                                         np.log(0.75) + log_softmax_masked(z[1])]), axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.exp(got).sum(-1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="at least one weight must be positive"):
        mixture_log_probs([jnp.zeros((1, 2))], [0.0])
