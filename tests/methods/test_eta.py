"""Exact token alignment: span merging, the matched/ULD distance and the loss against numpy; gradients."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jdistill.data import alignment_vocab
from jdistill.methods import eta, mined, uld
from tests.methods import cross_vocab_case as case
from tests.methods import views


def kl(p, q):
    return sum(pv * (np.log(pv) - np.log(qv)) for pv, qv in zip(p, q) if pv > 0)


DIVERGENCES = {"forward_kl": kl, "reverse_kl": lambda p, q: kl(q, p)}


def reference_distance(q, p, a, b, divergence="forward_kl"):
    """ETA between two probability vectors, written from the formula in float64."""
    rest_s = [v for v in range(len(q)) if v not in set(a)]
    rest_t = [u for u in range(len(p)) if u not in set(b)]
    q_hat, p_hat = [q[v] for v in a], [p[u] for u in b]
    if rest_s and rest_t:
        q_hat.append(sum(q[v] for v in rest_s))
        p_hat.append(sum(p[u] for u in rest_t))
    q_hat, p_hat = np.array(q_hat) / sum(q_hat), np.array(p_hat) / sum(p_hat)
    matched = DIVERGENCES[divergence](p_hat, q_hat)
    size = max(len(rest_s), len(rest_t))
    q_rest = sorted([q[v] for v in rest_s], reverse=True) + [0.0] * (size - len(rest_s))
    p_rest = sorted([p[u] for u in rest_t], reverse=True) + [0.0] * (size - len(rest_t))
    return matched + sum(abs(x - y) for x, y in zip(q_rest, p_rest))


def reference_kd(zs, zt, batch, a, b, tau, n, divergence="forward_kl"):
    """Σ over student tokens in complete spans of their span's ETA (distributions averaged per span) / n."""
    total = 0.0
    valid = (batch["eta_mask"] * batch["loss_mask"]) > 0
    for row in range(zs.shape[0]):
        for span in np.unique(batch["eta_span"][row][valid[row]]):
            members = np.flatnonzero(valid[row] & (batch["eta_span"][row] == span))
            start, end = batch["eta_teacher_start"][row, members[0]], batch["eta_teacher_end"][row, members[0]]
            q = np.mean([case.softmax(zs[row, i] / tau) for i in members], axis=0)
            p = np.mean([case.softmax(zt[row, j] / tau) for j in range(start, end)], axis=0)
            total += len(members) * reference_distance(q, p, a, b, divergence)
    return total / n


def random_probs(rng, *shape):
    return case.softmax(rng.normal(size=shape) * 2) if len(shape) == 1 else np.stack(
        [case.softmax(r) for r in rng.normal(size=shape).reshape(-1, shape[-1]) * 2]).reshape(shape)


def test_segment_log_mean_exp_against_numpy():
    rng = np.random.default_rng(0)
    probs = random_probs(rng, 6, 5)
    segments = np.array([2, 0, 2, 2, 0, 4])  # segments 1 and 3 are empty
    merge = jax.jit(eta.segment_log_mean_exp, static_argnums=2)
    got = np.exp(merge(jnp.log(jnp.asarray(probs, jnp.float32)), jnp.asarray(segments), 5))
    for g in range(5):
        rows = probs[segments == g]
        want = rows.mean(axis=0) if len(rows) else np.ones(5)  # empty segments: log 0 -> exp = 1
        np.testing.assert_allclose(got[g], want, rtol=1e-5)


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl"])
@pytest.mark.parametrize("a,b", [
    ([0, 3, 5, 6], [8, 1, 2, 0]),  # both sides keep unmatched entries: a bucket of unmatched mass
    ([0, 1, 2, 3, 4, 5, 6], [3, 1, 4, 0, 8, 2, 6]),  # the whole student vocabulary is matched: no bucket
    ([], []),  # nothing matched: plain ULD
])
def test_distance_matches_numpy(divergence, a, b):
    rng = np.random.default_rng(len(a))
    q, p = random_probs(rng, 3, 7), random_probs(rng, 3, 9)
    from jdistill.methods.kd import divergence_from_config

    fn = divergence_from_config(case.method_config("eta", divergence=divergence))
    distance = jax.jit(lambda x, y: eta.eta_distance(x, y, np.array(a, int), np.array(b, int), fn))
    got = distance(jnp.log(jnp.asarray(q, jnp.float32)), jnp.log(jnp.asarray(p, jnp.float32)))
    want = [reference_distance(q[i], p[i], a, b, divergence) for i in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_distance_limits_are_kd_and_uld():
    rng = np.random.default_rng(1)
    zs, zt = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    lq, lp = (jnp.asarray(z - np.log(np.exp(z).sum(-1, keepdims=True)), jnp.float32) for z in (zs, zt))
    same, none = np.arange(6), np.zeros(0, int)
    as_kd, as_uld, uld_value = jax.jit(lambda x, y: (
        eta.eta_distance(x, y, same, same), eta.eta_distance(x, y, none, none), uld.uld_distance(x, y, 1.0)))(lq, lp)
    np.testing.assert_allclose(as_kd, [kl(case.softmax(t), case.softmax(s)) for s, t in zip(zs, zt)], rtol=1e-5)
    np.testing.assert_allclose(as_uld, uld_value, rtol=1e-5)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    return case.tokenizers(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def prepared(tokenizers, tmp_path_factory):
    s_tok, t_tok = tokenizers
    method = case.make("eta", temperature=2.0)
    return method, case.prepared_batch(method, s_tok, t_tok, tmp_path_factory.mktemp("work"))


def test_host_hook_merges_split_numbers(prepared):
    _, batch = prepared
    valid = batch["eta_mask"] * batch["loss_mask"] > 0
    assert np.all(valid == (batch["loss_mask"] > 0))  # nothing truncated: every response token counted
    width = (batch["eta_teacher_end"] - batch["eta_teacher_start"])[valid]
    # "it is 15 ." → the "15" span holds two teacher tokens ("1" "5"); "5" in the second record only one.
    assert sorted(width.tolist()).count(2) == 2 and set(width.tolist()) == {1, 2}


def test_loss_matches_numpy(prepared, tokenizers):
    method, batch = prepared
    s_tok, t_tok = tokenizers
    student, teacher = case.random_models(7, batch, len(s_tok), len(t_tok), s_extra_rows=2)
    n = float(batch["loss_mask"].sum()) + 1.0
    total, metrics = case.jitted_loss(method)(batch, student, teacher, n)
    zs = np.asarray(student["hidden"] @ student["head"], np.float64)
    zt = np.asarray(teacher["hidden"] @ teacher["head"], np.float64)
    a, b = alignment_vocab.matched_vocabulary(s_tok, t_tok)
    want = reference_kd(zs[..., : len(s_tok)], zt, batch, list(a), list(b), 2.0, n)
    np.testing.assert_allclose(metrics["kd"], want, rtol=2e-5)
    ce = sum(-np.log(case.softmax(zs[r, i])[batch["targets"][r, i]]) for r, i in zip(*np.nonzero(batch["loss_mask"])))
    np.testing.assert_allclose(total, 0.5 * ce / n + 0.5 * want, rtol=2e-5)


def test_one_tokenizer_on_both_sides_is_plain_kd(tokenizers, tmp_path):
    s_tok, _ = tokenizers
    method = case.make("eta", temperature=1.5)
    batch = case.prepared_batch(method, s_tok, s_tok, tmp_path)
    assert np.all(batch["eta_teacher_end"] - batch["eta_teacher_start"] == (batch["loss_mask"] > 0))
    student, teacher = case.random_models(8, batch, len(s_tok), len(s_tok))
    n = float(batch["loss_mask"].sum())
    _, metrics = case.jitted_loss(method)(batch, student, teacher, n)
    zs = np.asarray(student["hidden"] @ student["head"], np.float64)
    zt = np.asarray(teacher["hidden"] @ teacher["head"], np.float64)
    want = sum(kl(case.softmax(zt[r, i] / 1.5), case.softmax(zs[r, i] / 1.5))
               for r, i in zip(*np.nonzero(batch["loss_mask"]))) / n
    np.testing.assert_allclose(metrics["kd"], want, rtol=2e-5)


def test_gradients_reach_the_student_only(prepared, tokenizers):
    method, batch = prepared
    student, teacher = case.random_models(9, batch, len(tokenizers[0]), len(tokenizers[1]))

    def loss(s, t):
        return method.loss({}, batch, views.view(s), views.view(t), views.context(10.0))[0]

    g_student, g_teacher = jax.jit(jax.grad(loss, argnums=(0, 1)))(student, teacher)
    assert all(float(jnp.abs(g).sum()) == 0 for g in jax.tree.leaves(g_teacher))
    assert float(jnp.abs(g_student["hidden"]).sum()) > 0
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(g_student))


def test_distance_gradient_against_finite_differences():
    rng = np.random.default_rng(2)
    lq = jnp.log(jnp.asarray(random_probs(rng, 2, 7), jnp.float32))
    lp = jnp.log(jnp.asarray(random_probs(rng, 2, 9), jnp.float32))
    a, b = np.array([0, 3, 5]), np.array([8, 1, 2])
    fn = jax.jit(lambda x: eta.eta_distance(jax.nn.log_softmax(x), lp, a, b).sum())
    check_grads(fn, (lq,), order=1, modes=["rev"], atol=2e-2, rtol=2e-2, eps=1e-3)


def test_loss_before_the_host_hook_names_it():
    with pytest.raises(RuntimeError, match="prepare_examples"):
        case.make("eta").loss({}, {}, None, None, views.context(1.0))


@pytest.mark.parametrize("module", [eta, mined])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
