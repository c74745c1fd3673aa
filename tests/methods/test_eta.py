"""Exact token alignment: the settings, the host hook, the batch glue and the loss against numpy; gradients.

The array kernels (span merges, distances) are tested in ``tests/losses/test_span_alignment.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill import losses
from jdistill.data import alignment_vocab
from jdistill.methods import eta
from jdistill.methods import method_settings
from tests.losses import numpy_reference as ref
from tests.methods import cross_vocab_case as case
from tests import fake_models as views


def reference_kd(zs, zt, batch, distance, tau, n, how):
    """Σ over student tokens in complete spans of their span's distance between merged vectors / n."""
    total = 0.0
    valid = (batch["eta_mask"] * batch["loss_mask"]) > 0
    for row in range(zs.shape[0]):
        for span in np.unique(batch["eta_span"][row][valid[row]]):
            members = np.flatnonzero(valid[row] & (batch["eta_span"][row] == span))
            start, end = batch["eta_teacher_start"][row, members[0]], batch["eta_teacher_end"][row, members[0]]
            q = ref.span_merge([case.softmax(zs[row, i] / tau) for i in members], batch["targets"][row, members], how)
            p = ref.span_merge([case.softmax(zt[row, j] / tau) for j in range(start, end)],
                               batch["teacher_targets"][row, start:end], how)
            total += len(members) * distance(q, p)
    return total / n


@pytest.mark.parametrize("overrides", [
    {"eta_matched_loss": "bucket", "divergence": "forward_kl"},
    {"eta_matched_loss": "bucket", "divergence": "reverse_kl"},
    {"eta_matched_loss": "gold", "jsd_beta": 0.0},
    {"jsd_beta": 0.5},  # the defaults: 'gold', beta 0.5
])
def test_distance_from_settings_binds_the_named_kernel(overrides):
    """The kernels are tested in tests/losses/test_span_alignment.py; here, that the settings pick them."""
    rng = np.random.default_rng(4)
    lq = jnp.asarray(np.log(case.softmax(rng.normal(size=7))), jnp.float32)[None]
    lp = jnp.asarray(np.log(case.softmax(rng.normal(size=9))), jnp.float32)[None]
    a, b = np.array([0, 3, 5]), np.array([8, 1, 2])
    settings = method_settings(case.method_config("eta", **overrides))
    got = eta.distance_from_settings(settings)(lq, lp, a, b)
    if settings.eta_matched_loss == "gold":
        want = losses.gold_distance(lq, lp, a, b, beta=settings.jsd_beta)
    else:
        want = losses.bucket_distance(lq, lp, a, b, losses.get_divergence(settings.divergence))
    np.testing.assert_array_equal(got, want)


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
    want_spans = [ref.eta_gold(q, p, a, b, 0.5) for q, p in zip(span_q, span_p)]
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
        others = [ref.eta_gold(span_q[1], np.array(HAND_MERGED[m][0]), a, b) for m in ("observed", "mean")]
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
        distance = lambda q, p: ref.eta_gold(q, p, list(a), list(b), 0.5)  # noqa: E731
    else:
        distance = lambda q, p: ref.eta_bucket(q, p, list(a), list(b))  # noqa: E731
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
    divergence = (lambda p, q: ref.gjsd_of_probs(p, q, beta)) if matched_loss == "gold" else ref.kl
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


def test_loss_before_the_host_hook_names_it():
    with pytest.raises(RuntimeError, match="prepare_examples"):
        case.make("eta").loss({}, {}, None, None, views.context(1.0))
