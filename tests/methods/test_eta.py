"""Exact token alignment: span merges, GOLD's and the bucket distance, the loss against numpy; gradients."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jdistill import losses
from jdistill.data import alignment_vocab
from jdistill.methods import eta, mined, uld
from jdistill.methods import method_settings
from tests.methods import cross_vocab_case as case
from tests.methods import views


def kl(p, q):
    return sum(pv * (np.log(pv) - np.log(qv)) for pv, qv in zip(p, q) if pv > 0)


def gjsd(p, q, beta):
    """GKD's generalized JSD of two vectors as given (no renormalisation), float64."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if beta == 0:
        return kl(p, q)
    if beta == 1:
        return kl(q, p)
    m = beta * p + (1 - beta) * q
    return beta * kl(p, m) + (1 - beta) * kl(q, m)


def sorted_l1(x, y):
    size = max(len(x), len(y))
    x = sorted(x, reverse=True) + [0.0] * (size - len(x))
    y = sorted(y, reverse=True) + [0.0] * (size - len(y))
    return sum(abs(u - v) for u, v in zip(x, y))


DIVERGENCES = {"forward_kl": kl, "reverse_kl": lambda p, q: kl(q, p)}


def reference_bucket(q, p, a, b, divergence="forward_kl"):
    """The 'bucket' distance between two probability vectors, written from the formula in float64."""
    rest_s = [v for v in range(len(q)) if v not in set(a)]
    rest_t = [u for u in range(len(p)) if u not in set(b)]
    q_hat, p_hat = [q[v] for v in a], [p[u] for u in b]
    if rest_s and rest_t:
        q_hat.append(sum(q[v] for v in rest_s))
        p_hat.append(sum(p[u] for u in rest_t))
    q_hat, p_hat = np.array(q_hat) / sum(q_hat), np.array(p_hat) / sum(p_hat)
    return DIVERGENCES[divergence](p_hat, q_hat) + sorted_l1([q[v] for v in rest_s], [p[u] for u in rest_t])


def reference_gold(q, p, a, b, beta=0.5):
    """GOLD's hybrid distance, float64: w·JSD_β(matched, as given) + (1 − w)·ULD(unmatched), w = K/V_t."""
    w = len(b) / len(p)
    matched = gjsd([p[u] for u in b], [q[v] for v in a], beta) if len(b) else 0.0
    rest_s = [q[v] for v in range(len(q)) if v not in set(a)]
    rest_t = [p[u] for u in range(len(p)) if u not in set(b)]
    rest = sorted_l1(rest_s, rest_t) if rest_s and rest_t else 0.0
    return w * matched + (1 - w) * rest


def reference_merge(probs, targets, how):
    """A span's merged vector from its positions' distributions ``probs`` and actual tokens ``targets``."""
    if how == "mean":
        return np.mean(probs, axis=0)
    base = len(probs) - 1 if how == "chain_rule" else 0
    scale = np.prod([probs[r][targets[r]] for r in range(len(probs)) if r != base])
    return probs[base] * scale


def reference_kd(zs, zt, batch, distance, tau, n, how):
    """Σ over student tokens in complete spans of their span's distance between merged vectors / n."""
    total = 0.0
    valid = (batch["eta_mask"] * batch["loss_mask"]) > 0
    for row in range(zs.shape[0]):
        for span in np.unique(batch["eta_span"][row][valid[row]]):
            members = np.flatnonzero(valid[row] & (batch["eta_span"][row] == span))
            start, end = batch["eta_teacher_start"][row, members[0]], batch["eta_teacher_end"][row, members[0]]
            q = reference_merge([case.softmax(zs[row, i] / tau) for i in members], batch["targets"][row, members], how)
            p = reference_merge([case.softmax(zt[row, j] / tau) for j in range(start, end)],
                                batch["teacher_targets"][row, start:end], how)
            total += len(members) * distance(q, p)
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


@pytest.mark.parametrize("how", ["chain_rule", "observed"])
def test_segment_chain_rule_against_numpy(how):
    rng = np.random.default_rng(1)
    probs = random_probs(rng, 7, 5)
    targets = rng.integers(0, 5, size=7)
    segments = np.array([1, 1, 0, 1, 3, 3, 0])  # segment 2 is empty; rows of a segment need not be adjacent
    base = "last" if how == "chain_rule" else "first"
    lp = jnp.log(jnp.asarray(probs, jnp.float32))
    target_lp = jnp.take_along_axis(lp, jnp.asarray(targets)[:, None], axis=-1)[:, 0]
    got = np.exp(jax.jit(lambda x, c, g: eta.segment_chain_rule(x, c, g, 4, base=base))(lp, target_lp, segments))
    for g in (0, 1, 3):
        rows = np.flatnonzero(segments == g)
        np.testing.assert_allclose(got[g], reference_merge(probs[rows], targets[rows], how), rtol=1e-5)
    assert np.all(np.isfinite(got[2]))


def test_segment_chain_rule_rejects_an_unknown_base():
    with pytest.raises(ValueError, match="base must be 'last' or 'first'"):
        eta.segment_chain_rule(jnp.zeros((2, 3)), jnp.zeros(2), jnp.zeros(2, int), 1, base="middle")


PAIRS = [
    ([0, 3, 5, 6], [8, 1, 2, 0]),  # both sides keep unmatched entries
    ([0, 1, 2, 3, 4, 5, 6], [3, 1, 4, 0, 8, 2, 6]),  # the whole student vocabulary is matched
    ([], []),  # nothing matched: plain ULD
]


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl"])
@pytest.mark.parametrize("a,b", PAIRS)
def test_bucket_distance_matches_numpy(divergence, a, b):
    rng = np.random.default_rng(len(a))
    q, p = random_probs(rng, 3, 7), random_probs(rng, 3, 9)
    settings = method_settings(case.method_config("eta", eta_matched_loss="bucket", divergence=divergence))
    fn = eta.distance_from_settings(settings)
    distance = jax.jit(lambda x, y: fn(x, y, np.array(a, int), np.array(b, int)))
    got = distance(jnp.log(jnp.asarray(q, jnp.float32)), jnp.log(jnp.asarray(p, jnp.float32)))
    want = [reference_bucket(q[i], p[i], a, b, divergence) for i in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("beta", [0.5, 0.0, 1.0])
@pytest.mark.parametrize("a,b", PAIRS)
def test_gold_distance_matches_numpy(beta, a, b):
    rng = np.random.default_rng(10 + len(a))
    q, p = random_probs(rng, 3, 7), random_probs(rng, 3, 9)
    q[1] *= 0.3  # a merged span is a sub-distribution: nothing may be renormalised
    p[2] *= 0.05
    fn = eta.distance_from_settings(method_settings(case.method_config("eta", jsd_beta=beta)))
    distance = jax.jit(lambda x, y: fn(x, y, np.array(a, int), np.array(b, int)))
    got = distance(jnp.log(jnp.asarray(q, jnp.float32)), jnp.log(jnp.asarray(p, jnp.float32)))
    want = [reference_gold(q[i], p[i], a, b, beta) for i in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_distance_limits_are_kd_and_uld():
    rng = np.random.default_rng(1)
    zs, zt = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    lq, lp = (jnp.asarray(z - np.log(np.exp(z).sum(-1, keepdims=True)), jnp.float32) for z in (zs, zt))
    same, none = np.arange(6), np.zeros(0, int)
    limits = jax.jit(lambda x, y: (
        eta.gold_distance(x, y, same, same, beta=0.5), eta.gold_distance(x, y, none, none, beta=0.5),
        eta.bucket_distance(x, y, same, same), eta.bucket_distance(x, y, none, none),
        losses.generalized_jsd(x, y, beta=0.5), uld.uld_distance(x, y, 1.0)))
    gold_kd, gold_uld, bucket_kd, bucket_uld, jsd_value, uld_value = limits(lq, lp)
    # Every entry matched: w = 1, the generalized JSD of GKD (GOLD's matched term); with 'bucket', D = KL.
    np.testing.assert_allclose(gold_kd, [gjsd(case.softmax(t), case.softmax(s), 0.5) for s, t in zip(zs, zt)],
                               rtol=1e-5)
    np.testing.assert_allclose(gold_kd, jsd_value, rtol=1e-5)
    np.testing.assert_allclose(bucket_kd, [kl(case.softmax(t), case.softmax(s)) for s, t in zip(zs, zt)], rtol=1e-5)
    # Nothing matched: w = 0, ULD in both forms.
    np.testing.assert_allclose(gold_uld, uld_value, rtol=1e-5)
    np.testing.assert_allclose(bucket_uld, uld_value, rtol=1e-5)


# A hand-built pair of vocabularies for the response "it 15 ok":
#   student: 0 <eos>, 1 "it", 2 "15", 3 "5", 4 "o", 5 "k"  -> it | 15 | o k | <eos>
#   teacher: 0 <eos>, 1 "it", 2 "1", 3 "5", 4 "ok", 5 "x", 6 "y"  -> it | 1 5 | ok | <eos>
# Matched (same string): <eos>, "it", "5" (ids 0, 1, 3 on both sides): K = 3 of V_t = 7, w = 3/7.
HAND_Q = np.array([  # student position -> distribution predicting its token
    [0.1, 0.5, 0.1, 0.1, 0.1, 0.1],  # predicts "it"
    [0.1, 0.1, 0.4, 0.2, 0.1, 0.1],  # predicts "15"
    [0.1, 0.1, 0.1, 0.1, 0.5, 0.1],  # predicts "o": q("o") = 0.5
    [0.2, 0.1, 0.1, 0.1, 0.1, 0.4],  # predicts "k": q("k") = 0.4
    [0.6, 0.1, 0.1, 0.1, 0.05, 0.05],  # predicts <eos>
    [1 / 6] * 6,  # padding
])
HAND_P = np.array([
    [0.05, 0.6, 0.1, 0.05, 0.1, 0.05, 0.05],  # predicts "it"
    [0.1, 0.1, 0.5, 0.1, 0.1, 0.05, 0.05],  # predicts "1": p("1") = 0.5
    [0.05, 0.05, 0.1, 0.6, 0.1, 0.05, 0.05],  # predicts "5": p("5") = 0.6
    [0.1, 0.1, 0.1, 0.1, 0.5, 0.05, 0.05],  # predicts "ok"
    [0.7, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05],  # predicts <eos>
    [1 / 7] * 7,  # padding
])
HAND_BATCH = {
    "loss_mask": np.array([[1, 1, 1, 1, 1, 0]], np.float32),
    "targets": np.array([[1, 2, 4, 5, 0, 0]], np.int32),
    "teacher_targets": np.array([[1, 2, 3, 4, 0, 0]], np.int32),
    "eta_span": np.array([[0, 1, 2, 2, 3, 0]], np.int32),
    "eta_teacher_start": np.array([[0, 1, 3, 3, 4, 0]], np.int32),
    "eta_teacher_end": np.array([[1, 3, 4, 4, 5, 0]], np.int32),
    "eta_mask": np.array([[1, 1, 1, 1, 1, 0]], np.float32),
}
# The merged vectors of the two multi-token spans, computed by hand:
HAND_MERGED = {
    # teacher "1 5": p_5(·) · p_1("1");  student "o k": q_k(·) · q_o("o")
    "chain_rule": ([0.025, 0.025, 0.05, 0.3, 0.05, 0.025, 0.025], [0.1, 0.05, 0.05, 0.05, 0.05, 0.2]),
    # teacher: p_1(·) · p_5("5");  student: q_o(·) · q_k("k")
    "observed": ([0.06, 0.06, 0.3, 0.06, 0.06, 0.03, 0.03], [0.04, 0.04, 0.04, 0.04, 0.2, 0.04]),
    "mean": ([0.075, 0.075, 0.3, 0.35, 0.1, 0.05, 0.05], [0.15, 0.1, 0.1, 0.1, 0.3, 0.25]),
}


@pytest.mark.parametrize("how", ["chain_rule", "observed", "mean"])
def test_hand_built_two_tokenizer_example(how):
    teacher_15, student_ok = (np.array(v) for v in HAND_MERGED[how])
    span_q = [HAND_Q[0], HAND_Q[1], student_ok, HAND_Q[4]]
    span_p = [HAND_P[0], teacher_15, HAND_P[3], HAND_P[4]]
    a = b = [0, 1, 3]
    want_spans = [reference_gold(q, p, a, b, 0.5) for q, p in zip(span_q, span_p)]
    want_positions = [want_spans[s] for s in (0, 1, 2, 2, 3)]

    fn = eta.distance_from_settings(method_settings(case.method_config("eta")))
    values = jax.jit(lambda zs, zt: eta.eta_token_values(
        zs, zt, HAND_BATCH, lambda lq, lp: fn(lq, lp, np.array(a), np.array(b)), temperature=1.0, span_merge=how))
    got, counted = values(jnp.log(jnp.asarray(HAND_Q[None], jnp.float32)),
                          jnp.log(jnp.asarray(HAND_P[None], jnp.float32)))
    np.testing.assert_allclose(got[0, :5], want_positions, rtol=1e-5)
    np.testing.assert_array_equal(counted[0], [1, 1, 1, 1, 1, 0])
    # The single-token spans do not depend on the merge; the two split spans do.
    if how == "chain_rule":
        others = [reference_gold(span_q[1], np.array(HAND_MERGED[m][0]), a, b) for m in ("observed", "mean")]
        assert all(abs(want_spans[1] - o) > 1e-3 for o in others)


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


@pytest.mark.parametrize("how,matched_loss", [("chain_rule", "gold"), ("observed", "gold"), ("mean", "bucket")])
def test_loss_matches_numpy(prepared, tokenizers, how, matched_loss):
    _, batch = prepared
    s_tok, t_tok = tokenizers
    method = case.make("eta", temperature=2.0, eta_span_merge=how, eta_matched_loss=matched_loss)
    method.prepare_examples([], case.DataContext(None, "", s_tok, t_tok, "train"))
    student, teacher = case.random_models(7, batch, len(s_tok), len(t_tok), s_extra_rows=2)
    n = float(batch["loss_mask"].sum()) + 1.0
    total, metrics = case.jitted_loss(method)(batch, student, teacher, n)
    zs = np.asarray(student["hidden"] @ student["head"], np.float64)
    zt = np.asarray(teacher["hidden"] @ teacher["head"], np.float64)
    a, b = alignment_vocab.matched_vocabulary(s_tok, t_tok)
    if matched_loss == "gold":
        distance = lambda q, p: reference_gold(q, p, list(a), list(b), 0.5)  # noqa: E731
    else:
        distance = lambda q, p: reference_bucket(q, p, list(a), list(b))  # noqa: E731
    want = reference_kd(zs[..., : len(s_tok)], zt, batch, distance, 2.0, n, how)
    np.testing.assert_allclose(metrics["kd"], want, rtol=2e-5)
    ce = sum(-np.log(case.softmax(zs[r, i])[batch["targets"][r, i]]) for r, i in zip(*np.nonzero(batch["loss_mask"])))
    np.testing.assert_allclose(total, 0.5 * ce / n + 0.5 * want, rtol=2e-5)


@pytest.mark.parametrize("matched_loss,beta", [("gold", 0.5), ("gold", 0.0), ("bucket", 0.5)])
def test_one_tokenizer_on_both_sides_is_plain_kd(tokenizers, tmp_path, matched_loss, beta):
    """Every span is one token and every entry matched: GKD's generalized JSD ('gold'), forward KL ('bucket')."""
    s_tok, _ = tokenizers
    method = case.make("eta", temperature=1.5, eta_matched_loss=matched_loss, jsd_beta=beta)
    batch = case.prepared_batch(method, s_tok, s_tok, tmp_path)
    assert np.all(batch["eta_teacher_end"] - batch["eta_teacher_start"] == (batch["loss_mask"] > 0))
    a, b = alignment_vocab.matched_vocabulary(s_tok, s_tok)
    assert len(a) == len(s_tok) and np.all(a == b)  # the weight of the matched term is K / V_t = 1
    student, teacher = case.random_models(8, batch, len(s_tok), len(s_tok))
    n = float(batch["loss_mask"].sum())
    _, metrics = case.jitted_loss(method)(batch, student, teacher, n)
    zs = np.asarray(student["hidden"] @ student["head"], np.float64)
    zt = np.asarray(teacher["hidden"] @ teacher["head"], np.float64)
    divergence = (lambda p, q: gjsd(p, q, beta)) if matched_loss == "gold" else kl
    want = sum(divergence(case.softmax(zt[r, i] / 1.5), case.softmax(zs[r, i] / 1.5))
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


@pytest.mark.parametrize("how", ["chain_rule", "mean"])
def test_merged_distance_gradient_against_finite_differences(how):
    """Through the merge: the actual-token probabilities of a span carry gradient too (as in GOLD)."""
    rng = np.random.default_rng(2)
    zq = jnp.asarray(rng.normal(size=(1, 3, 7)), jnp.float32)
    lp = jnp.log(jnp.asarray(random_probs(rng, 1, 3, 9), jnp.float32))
    targets, segments = jnp.array([[4, 1, 0]]), jnp.array([[0, 0, 1]])
    a, b = np.array([0, 3, 5]), np.array([8, 1, 2])

    def value(z):
        lq = eta.merge_spans(jax.nn.log_softmax(z), targets, segments, 2, how)
        lpm = eta.merge_spans(lp, targets, segments, 2, how)
        return eta.gold_distance(lq, lpm, a, b, beta=0.5).sum()

    check_grads(jax.jit(value), (zq,), order=1, modes=["rev"], atol=2e-2, rtol=2e-2, eps=1e-3)


def test_loss_before_the_host_hook_names_it():
    with pytest.raises(RuntimeError, match="prepare_examples"):
        case.make("eta").loss({}, {}, None, None, views.context(1.0))


@pytest.mark.parametrize("module", [eta, mined])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
