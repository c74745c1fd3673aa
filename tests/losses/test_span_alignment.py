"""Exact token alignment's kernels: span merges, GOLD's and the bucket distance against numpy; gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jdistill import losses
from tests.losses import numpy_reference as ref


def random_probs(rng, *shape):
    return ref.softmax(rng.normal(size=shape) * 2)


def test_segment_log_mean_exp_against_numpy():
    rng = np.random.default_rng(0)
    probs = random_probs(rng, 6, 5)
    segments = np.array([2, 0, 2, 2, 0, 4])  # segments 1 and 3 are empty
    merge = jax.jit(losses.segment_log_mean_exp, static_argnums=2)
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
    got = np.exp(jax.jit(lambda x, c, g: losses.segment_chain_rule(x, c, g, 4, base=base))(lp, target_lp, segments))
    for g in (0, 1, 3):
        rows = np.flatnonzero(segments == g)
        np.testing.assert_allclose(got[g], ref.span_merge(probs[rows], targets[rows], how), rtol=1e-5)
    assert np.all(np.isfinite(got[2]))


def test_segment_chain_rule_rejects_an_unknown_base():
    with pytest.raises(ValueError, match="base must be 'last' or 'first'"):
        losses.segment_chain_rule(jnp.zeros((2, 3)), jnp.zeros(2), jnp.zeros(2, int), 1, base="middle")


@pytest.mark.parametrize("how", losses.SPAN_MERGES)
def test_merge_spans_against_numpy(how):
    rng = np.random.default_rng(3)
    probs = random_probs(rng, 2, 5, 4)
    targets = rng.integers(0, 4, size=(2, 5))
    segments = np.array([[0, 0, 1, 2, 2], [1, 0, 0, 0, 2]])
    got = np.exp(losses.merge_spans(jnp.log(jnp.asarray(probs, jnp.float32)), jnp.asarray(targets),
                                    jnp.asarray(segments), 3, how))
    for row in range(2):
        for g in range(3):
            rows = np.flatnonzero(segments[row] == g)
            want = ref.span_merge(probs[row, rows], targets[row, rows], how)
            np.testing.assert_allclose(got[row, g], want, rtol=1e-5)
    with pytest.raises(ValueError, match="how must be one of"):
        losses.merge_spans(jnp.zeros((1, 2, 3)), jnp.zeros((1, 2), int), jnp.zeros((1, 2), int), 1, "max")


def test_teacher_segments_and_unmatched_ids():
    span = np.array([[0, 1, 1, 2, 0], [0, 0, 1, 5, 5]])
    start = np.array([[0, 1, 1, 4, 0], [0, 0, 2, 0, 0]])
    end = np.array([[1, 4, 4, 5, 0], [2, 2, 3, 6, 6]])
    valid = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], bool)
    got = losses.teacher_segments(jnp.asarray(span), jnp.asarray(start), jnp.asarray(end), jnp.asarray(valid), 6, 9)
    np.testing.assert_array_equal(got, [[0, 1, 1, 1, 2, 9], [0, 0, 1, 9, 9, 9]])
    np.testing.assert_array_equal(losses.unmatched_ids(6, np.array([4, 0, 2])), [1, 3, 5])
    np.testing.assert_array_equal(losses.unmatched_ids(3, np.zeros(0, int)), [0, 1, 2])


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
    kernel = losses.get_divergence(divergence)
    distance = jax.jit(lambda x, y: losses.bucket_distance(x, y, np.array(a, int), np.array(b, int), kernel))
    got = distance(jnp.log(jnp.asarray(q, jnp.float32)), jnp.log(jnp.asarray(p, jnp.float32)))
    want = [ref.eta_bucket(q[i], p[i], a, b, divergence) for i in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("beta", [0.5, 0.0, 1.0])
@pytest.mark.parametrize("a,b", PAIRS)
def test_gold_distance_matches_numpy(beta, a, b):
    rng = np.random.default_rng(10 + len(a))
    q, p = random_probs(rng, 3, 7), random_probs(rng, 3, 9)
    q[1] *= 0.3  # a merged span is a sub-distribution: nothing may be renormalised
    p[2] *= 0.05
    distance = jax.jit(lambda x, y: losses.gold_distance(x, y, np.array(a, int), np.array(b, int), beta=beta))
    got = distance(jnp.log(jnp.asarray(q, jnp.float32)), jnp.log(jnp.asarray(p, jnp.float32)))
    want = [ref.eta_gold(q[i], p[i], a, b, beta) for i in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_distance_limits_are_kd_and_uld():
    rng = np.random.default_rng(1)
    zs, zt = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    lq, lp = (jnp.asarray(z - np.log(np.exp(z).sum(-1, keepdims=True)), jnp.float32) for z in (zs, zt))
    same, none = np.arange(6), np.zeros(0, int)
    limits = jax.jit(lambda x, y: (
        losses.gold_distance(x, y, same, same, beta=0.5), losses.gold_distance(x, y, none, none, beta=0.5),
        losses.bucket_distance(x, y, same, same), losses.bucket_distance(x, y, none, none),
        losses.generalized_jsd(x, y, beta=0.5), losses.uld_distance(x, y, 1.0)))
    gold_kd, gold_uld, bucket_kd, bucket_uld, jsd_value, uld_value = limits(lq, lp)
    # Every entry matched: w = 1, the generalized JSD of GKD (GOLD's matched term); with 'bucket', D = KL.
    np.testing.assert_allclose(
        gold_kd, [ref.gjsd_of_probs(ref.softmax(t), ref.softmax(s), 0.5) for s, t in zip(zs, zt)], rtol=1e-5)
    np.testing.assert_allclose(gold_kd, jsd_value, rtol=1e-5)
    np.testing.assert_allclose(bucket_kd, [ref.kl(ref.softmax(t), ref.softmax(s)) for s, t in zip(zs, zt)], rtol=1e-5)
    # Nothing matched: w = 0, ULD in both forms.
    np.testing.assert_allclose(gold_uld, uld_value, rtol=1e-5)
    np.testing.assert_allclose(bucket_uld, uld_value, rtol=1e-5)


@pytest.mark.parametrize("how", ["chain_rule", "mean"])
def test_merged_distance_gradient_against_finite_differences(how):
    """Through the merge: the actual-token probabilities of a span carry gradient too (as in GOLD)."""
    rng = np.random.default_rng(2)
    zq = jnp.asarray(rng.normal(size=(1, 3, 7)), jnp.float32)
    lp = jnp.log(jnp.asarray(random_probs(rng, 1, 3, 9), jnp.float32))
    targets, segments = jnp.array([[4, 1, 0]]), jnp.array([[0, 0, 1]])
    a, b = np.array([0, 3, 5]), np.array([8, 1, 2])

    def value(z):
        lq = losses.merge_spans(jax.nn.log_softmax(z), targets, segments, 2, how)
        lpm = losses.merge_spans(lp, targets, segments, 2, how)
        return losses.gold_distance(lq, lpm, a, b, beta=0.5).sum()

    check_grads(jax.jit(value), (zq,), order=1, modes=["rev"], atol=2e-2, rtol=2e-2, eps=1e-3)
