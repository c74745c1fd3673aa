"""Divergence kernels against hand-computed values, numpy, identities and finite differences."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jdistill import losses
from tests.losses import numpy_reference as ref

# kernel name -> (jax kernel, numpy reference, extra kwargs used in the comparisons)
CASES = {
    "forward_kl": (losses.forward_kl, ref.forward_kl, {}),
    "reverse_kl": (losses.reverse_kl, ref.reverse_kl, {}),
    "js_divergence": (losses.js_divergence, ref.js_divergence, {}),
    "generalized_jsd": (losses.generalized_jsd, ref.generalized_jsd, {"beta": 0.3}),
    "skew_forward_kl": (losses.skew_forward_kl, ref.skew_forward_kl, {"alpha": 0.2}),
    "skew_reverse_kl": (losses.skew_reverse_kl, ref.skew_reverse_kl, {"alpha": 0.2}),
    "total_variation": (losses.total_variation, ref.total_variation, {}),
    "adaptive_kl": (losses.adaptive_kl, ref.adaptive_kl, {"mu": 0.5}),
}
NAMES = sorted(CASES)


def random_logits(seed, shape=(3, 5, 11), shared_neg_inf=0.15, scale=2.0):
    """Student and teacher logits with -inf at shared random vocabulary entries."""
    rng = np.random.default_rng(seed)
    s = rng.normal(size=shape) * scale
    t = rng.normal(size=shape) * scale
    dead = rng.random(shape) < shared_neg_inf
    dead[..., 0] = False  # keep every row non-empty here; empty rows have their own test
    s[dead] = -np.inf
    t[dead] = -np.inf
    return s.astype(np.float32), t.astype(np.float32)


def test_registry_lists_every_kernel():
    assert sorted(losses.DIVERGENCES) == NAMES
    assert losses.get_divergence("skew_forward_kl") is losses.skew_forward_kl
    with pytest.raises(ValueError, match="Unknown divergence 'kl'.*forward_kl"):
        losses.get_divergence("kl")


class TestHandComputed:
    """Three-token distributions p = (1/2, 1/4, 1/4), q = (1/4, 1/4, 1/2)."""

    p = np.array([0.5, 0.25, 0.25])
    q = np.array([0.25, 0.25, 0.5])
    s = jnp.log(jnp.asarray(q, jnp.float32))
    t = jnp.log(jnp.asarray(p, jnp.float32))
    ln2 = math.log(2.0)

    def test_forward_and_reverse_kl(self):
        # KL(p||q) = 1/2 ln 2 + 1/4 ln(1/2) = ln2/4; by symmetry of this pair KL(q||p) too.
        np.testing.assert_allclose(losses.forward_kl(self.s, self.t), self.ln2 / 4, rtol=1e-6)
        np.testing.assert_allclose(losses.reverse_kl(self.s, self.t), self.ln2 / 4, rtol=1e-6)

    def test_js(self):
        # m = (3/8, 1/4, 3/8): KL(p||m) = 1/2 ln(4/3) + 1/4 ln(2/3) = KL(q||m).
        expected = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3)
        np.testing.assert_allclose(losses.js_divergence(self.s, self.t), expected, rtol=1e-6)

    def test_skew_kl(self):
        # alpha = 1/2: mixture m = (3/8, 1/4, 3/8), SKL = KL(p||m), SRKL = KL(q||m).
        expected = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3)
        np.testing.assert_allclose(losses.skew_forward_kl(self.s, self.t, alpha=0.5), expected, rtol=1e-6)
        np.testing.assert_allclose(losses.skew_reverse_kl(self.s, self.t, alpha=0.5), expected, rtol=1e-6)

    def test_generalized_jsd_interior(self):
        # beta = 1/4: m = 1/4 p + 3/4 q = (5/16, 1/4, 7/16).
        m = np.array([5 / 16, 4 / 16, 7 / 16])
        kl_pm = sum(a * math.log(a / b) for a, b in zip(self.p, m))
        kl_qm = sum(a * math.log(a / b) for a, b in zip(self.q, m))
        expected = 0.25 * kl_pm + 0.75 * kl_qm
        np.testing.assert_allclose(losses.generalized_jsd(self.s, self.t, beta=0.25), expected, rtol=1e-6)

    def test_total_variation(self):
        np.testing.assert_allclose(losses.total_variation(self.s, self.t), 0.25, rtol=1e-6)

    def test_adaptive_kl(self):
        # p sorted ascending: 1/4 (idx 1), 1/4 (idx 2), 1/2. With mu = 0.5 the two
        # quarters form the tail: g_tail = |1/4-1/4| + |1/4-1/2| = 1/4, g_head = 1/4.
        expected = 0.5 * (self.ln2 / 4) + 0.5 * (self.ln2 / 4)
        np.testing.assert_allclose(losses.adaptive_kl(self.s, self.t, mu=0.5), expected, rtol=1e-6)
        # mu = 0.3: only one quarter in the tail; which one is a tie, so use an
        # unambiguous teacher instead: p = (0.2, 0.3, 0.5), q as before.
        p = np.array([0.2, 0.3, 0.5])
        t = jnp.log(jnp.asarray(p, jnp.float32))
        g_tail, g_head = abs(0.2 - 0.25), abs(0.3 - 0.25) + abs(0.5 - 0.5)
        fkl = sum(a * math.log(a / b) for a, b in zip(p, self.q))
        rkl = sum(b * math.log(b / a) for a, b in zip(p, self.q))
        expected = (g_head * fkl + g_tail * rkl) / (g_head + g_tail)
        np.testing.assert_allclose(losses.adaptive_kl(self.s, t, mu=0.3), expected, rtol=1e-5)

    def test_temperature_divides_logits(self):
        s, t = self.s * 2.0, self.t * 2.0
        np.testing.assert_allclose(losses.forward_kl(s, t, temperature=2.0), self.ln2 / 4, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_matches_numpy_reference_under_jit(name, temperature):
    kernel, reference, kwargs = CASES[name]
    s, t = random_logits(seed=hash(name) % 1000)
    got = jax.jit(functools.partial(kernel, temperature=temperature, **kwargs))(s, t)
    want = reference(s, t, temperature=temperature, **kwargs)
    assert got.shape == s.shape[:-1] and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_inputs_are_computed_in_float32(name):
    kernel, reference, kwargs = CASES[name]
    s, t = random_logits(seed=7)
    s16, t16 = jnp.asarray(s, jnp.bfloat16), jnp.asarray(t, jnp.bfloat16)
    got = jax.jit(functools.partial(kernel, **kwargs))(s16, t16)
    assert got.dtype == jnp.float32
    # The reference sees exactly the bf16-rounded values, in float64.
    want = reference(np.asarray(s16, np.float32), np.asarray(t16, np.float32), **kwargs)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_where_mask_equals_minus_inf_logits(name):
    kernel, reference, kwargs = CASES[name]
    s, t = random_logits(seed=3, shared_neg_inf=0.0)
    rng = np.random.default_rng(4)
    where = rng.random(s.shape[-1]) < 0.7  # one vocabulary mask broadcast over tokens
    where[0] = True
    got = kernel(s, t, where=jnp.asarray(where), **kwargs)
    s_cut, t_cut = np.where(where, s, -np.inf), np.where(where, t, -np.inf)
    np.testing.assert_allclose(got, kernel(s_cut, t_cut, **kwargs), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got, reference(s, t, where=where, **kwargs), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_empty_rows_give_zero_with_finite_gradients(name):
    kernel, _, kwargs = CASES[name]
    s, t = random_logits(seed=5, shape=(2, 3, 6), shared_neg_inf=0.0)
    where = np.ones(s.shape, bool)
    where[0, 1] = False  # one token with no valid vocabulary entry
    values = kernel(s, t, where=jnp.asarray(where), **kwargs)
    assert float(values[0, 1]) == 0.0
    assert np.all(np.isfinite(values))
    grads = jax.grad(lambda a, b: kernel(a, b, where=jnp.asarray(where), **kwargs).sum(), argnums=(0, 1))(s, t)
    for g in grads:
        assert np.all(np.isfinite(g))
        np.testing.assert_array_equal(g[0, 1], 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_neg_inf_logits_give_finite_values_and_gradients(name):
    kernel, _, kwargs = CASES[name]
    s, t = random_logits(seed=6, shared_neg_inf=0.4)
    values = kernel(s, t, **kwargs)
    grads = jax.grad(lambda a, b: kernel(a, b, **kwargs).sum(), argnums=(0, 1))(s, t)
    assert np.all(np.isfinite(values))
    for g in grads:
        assert np.all(np.isfinite(g))
        # An entry with probability 0 on both sides gets no gradient.
        assert np.all(g[np.isneginf(s)] == 0.0)


def test_one_sided_neg_inf_where_the_divergence_is_finite():
    """Teacher-only -inf is fine for forward KL, student-only -inf for reverse KL."""
    s, t = random_logits(seed=8, shared_neg_inf=0.0)
    t_dead, s_dead = t.copy(), s.copy()
    t_dead[..., 1:4] = -np.inf
    s_dead[..., 1:4] = -np.inf
    pairs = [
        (losses.forward_kl, ref.forward_kl, s, t_dead, {}),
        (losses.reverse_kl, ref.reverse_kl, s_dead, t, {}),
        (losses.skew_forward_kl, ref.skew_forward_kl, s_dead, t, {"alpha": 0.1}),
        (losses.skew_reverse_kl, ref.skew_reverse_kl, s, t_dead, {"alpha": 0.1}),
        (losses.js_divergence, ref.js_divergence, s, t_dead, {}),
        (losses.total_variation, ref.total_variation, s_dead, t, {}),
    ]
    for kernel, reference, a, b, kw in pairs:
        got = kernel(a, b, **kw)
        np.testing.assert_allclose(got, reference(a, b, **kw), rtol=1e-4, atol=1e-6)
        grads = jax.grad(lambda x, y: kernel(x, y, **kw).sum(), argnums=(0, 1))(a, b)
        assert all(np.all(np.isfinite(g)) for g in grads), kernel.__name__


class TestIdentities:
    s, t = random_logits(seed=11)

    def test_skew_at_zero_alpha_is_plain_kl(self):
        np.testing.assert_allclose(
            losses.skew_forward_kl(self.s, self.t, alpha=0.0), losses.forward_kl(self.s, self.t), rtol=1e-6
        )
        np.testing.assert_allclose(
            losses.skew_reverse_kl(self.s, self.t, alpha=0.0), losses.reverse_kl(self.s, self.t), rtol=1e-6
        )

    def test_skew_at_alpha_one_is_zero(self):
        np.testing.assert_allclose(losses.skew_forward_kl(self.s, self.t, alpha=1.0), 0.0, atol=1e-6)
        np.testing.assert_allclose(losses.skew_reverse_kl(self.s, self.t, alpha=1.0), 0.0, atol=1e-6)

    def test_generalized_jsd_endpoints_are_exact(self):
        np.testing.assert_array_equal(
            losses.generalized_jsd(self.s, self.t, beta=0.0), losses.forward_kl(self.s, self.t)
        )
        np.testing.assert_array_equal(
            losses.generalized_jsd(self.s, self.t, beta=1.0), losses.reverse_kl(self.s, self.t)
        )

    def test_generalized_jsd_endpoints_with_a_traced_beta(self):
        f = jax.jit(lambda s, t, b: losses.generalized_jsd(s, t, beta=b))
        # Same math, different XLA fusion: equal to float32 rounding.
        np.testing.assert_allclose(f(self.s, self.t, 0.0), losses.forward_kl(self.s, self.t), rtol=1e-6)
        np.testing.assert_allclose(f(self.s, self.t, 1.0), losses.reverse_kl(self.s, self.t), rtol=1e-6)
        np.testing.assert_allclose(
            f(self.s, self.t, 0.3), losses.generalized_jsd(self.s, self.t, beta=0.3), rtol=1e-6
        )

    def test_js_is_symmetric_and_the_half_generalized_jsd(self):
        np.testing.assert_allclose(
            losses.js_divergence(self.s, self.t), losses.js_divergence(self.t, self.s), rtol=1e-5
        )
        np.testing.assert_allclose(
            losses.js_divergence(self.s, self.t), losses.generalized_jsd(self.s, self.t, beta=0.5), rtol=1e-6
        )
        assert np.all(np.asarray(losses.js_divergence(self.s, self.t)) <= math.log(2) + 1e-6)

    @pytest.mark.parametrize("name", NAMES)
    def test_nonnegative_and_zero_on_equal_distributions(self, name):
        kernel, _, kwargs = CASES[name]
        assert np.all(np.asarray(kernel(self.s, self.t, **kwargs)) >= -1e-6)
        np.testing.assert_allclose(kernel(self.t, self.t, **kwargs), 0.0, atol=1e-6)
        # Shifting logits by a constant does not change a distribution.
        np.testing.assert_allclose(kernel(self.t + 3.0, self.t, **kwargs), 0.0, atol=1e-5)

    def test_total_variation_is_at_most_one(self):
        s = np.array([[0.0, -np.inf], [20.0, -20.0]], np.float32)
        t = np.array([[-np.inf, 0.0], [-20.0, 20.0]], np.float32)
        tv = np.asarray(losses.total_variation(s, t))
        np.testing.assert_allclose(tv, 1.0, atol=1e-6)
        assert np.all(np.asarray(losses.total_variation(self.s, self.t)) <= 1.0)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "adaptive_kl"])
def test_gradients_match_finite_differences(name):
    kernel, _, kwargs = CASES[name]
    s, t = random_logits(seed=13, shape=(2, 7), shared_neg_inf=0.0, scale=1.0)
    f = lambda a, b: kernel(a, b, **kwargs)  # noqa: E731
    check_grads(f, (jnp.asarray(s), jnp.asarray(t)), order=1, modes=["rev"], atol=2e-2, rtol=2e-2, eps=1e-3)


def test_adaptive_kl_gradient_treats_the_gaps_as_constants():
    """AKL's head/tail weights are stop-gradient: d AKL = w_head d FKL + w_tail d RKL."""
    s, t = random_logits(seed=13, shape=(2, 7), shared_neg_inf=0.0, scale=1.0)
    q, p = ref.softmax(s), ref.softmax(t)
    w = []
    for b in range(2):
        order = np.argsort(p[b])
        tail = np.zeros(7, bool)
        tail[order] = np.cumsum(p[b][order]) <= 0.5
        gap = np.abs(p[b] - q[b])
        w.append((gap[~tail].sum(), gap[tail].sum()))
    w = np.array(w) / np.array(w).sum(-1, keepdims=True)

    def frozen(s_, t_):
        return (w[:, 0] * ref.forward_kl(s_, t_) + w[:, 1] * ref.reverse_kl(s_, t_)).sum()

    grad_s, grad_t = jax.grad(lambda a, b: losses.adaptive_kl(a, b, mu=0.5).sum(), argnums=(0, 1))(s, t)
    np.testing.assert_allclose(grad_s, ref.numeric_grad(lambda x: frozen(x, t), s), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(grad_t, ref.numeric_grad(lambda x: frozen(s, x), t), rtol=1e-3, atol=1e-5)


def test_skew_reverse_kl_stop_gradient_mixture():
    """The value is unchanged; the gradient treats the q inside the mixture as a constant."""
    s, t = random_logits(seed=17, shape=(2, 6), shared_neg_inf=0.0, scale=1.0)
    alpha = 0.3
    plain = losses.skew_reverse_kl(s, t, alpha=alpha)
    stopped = losses.skew_reverse_kl(s, t, alpha=alpha, stop_gradient_mixture=True)
    np.testing.assert_allclose(plain, stopped, rtol=1e-7)

    grad = jax.grad(lambda a: losses.skew_reverse_kl(a, t, alpha=alpha, stop_gradient_mixture=True).sum())(s)
    q_fixed = ref.softmax(s)
    numeric = ref.numeric_grad(lambda x: ref.skew_reverse_kl(x, t, alpha, q_in_mixture=q_fixed).sum(), s)
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-4)
    # ... and it differs from the full gradient, so the test can tell them apart.
    full = jax.grad(lambda a: losses.skew_reverse_kl(a, t, alpha=alpha).sum())(s)
    assert np.max(np.abs(np.asarray(full) - np.asarray(grad))) > 1e-3


def test_per_sequence_alpha_broadcasts_over_tokens():
    s, t = random_logits(seed=19)  # [3, 5, 11]
    alphas = np.array([0.0, 0.1, 0.5], np.float32)
    for kernel, reference in ((losses.skew_forward_kl, ref.skew_forward_kl), (losses.skew_reverse_kl, ref.skew_reverse_kl)):
        got = kernel(s, t, alpha=jnp.asarray(alphas))
        for b, a in enumerate(alphas):
            np.testing.assert_allclose(got[b], kernel(s[b], t[b], alpha=float(a)), rtol=1e-6)
        np.testing.assert_allclose(got, reference(s, t, alphas), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="alpha of shape \\(5,\\)"):
        losses.skew_forward_kl(s, t, alpha=jnp.full((5,), 0.1))


class TestBadArguments:
    s, t = random_logits(seed=23)

    @pytest.mark.parametrize(
        "call, message",
        [
            (lambda s, t: losses.skew_forward_kl(s, t, alpha=1.5), "alpha must lie in \\[0, 1\\]"),
            (lambda s, t: losses.skew_reverse_kl(s, t, alpha=-0.1), "alpha must lie in \\[0, 1\\]"),
            (lambda s, t: losses.skew_forward_kl(s, t, alpha=jnp.array([0.1, 2.0, 0.1])), "alpha must lie"),
            (lambda s, t: losses.generalized_jsd(s, t, beta=1.2), "beta must lie in \\[0, 1\\]"),
            (lambda s, t: losses.adaptive_kl(s, t, mu=2.0), "mu must lie in \\[0, 1\\]"),
            (lambda s, t: losses.forward_kl(s, t, temperature=0.0), "temperature must be > 0"),
            (lambda s, t: losses.forward_kl(s, t[..., :-1]), "same shape.*cross-vocabulary"),
        ],
    )
    def test_value_errors(self, call, message):
        with pytest.raises(ValueError, match=message):
            call(self.s, self.t)

    def test_integer_logits_are_rejected(self):
        with pytest.raises(TypeError, match="floating-point"):
            losses.forward_kl(jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 3), jnp.float32))

    def test_checks_happen_at_trace_time(self):
        with pytest.raises(ValueError, match="alpha must lie"):
            jax.jit(lambda s, t: losses.skew_forward_kl(s, t, alpha=3.0))(self.s, self.t)
