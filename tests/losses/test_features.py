"""Feature distances (feature-based KD) against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill import losses
from tests.losses import numpy_reference as ref


def _pair(seed, shape=(2, 3, 5)):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype(np.float32), rng.normal(size=shape).astype(np.float32)


def test_mse_matches_numpy():
    s, t = _pair(0)
    want = np.array([[np.mean((s[b, i].astype(np.float64) - t[b, i]) ** 2) for i in range(3)] for b in range(2)])
    np.testing.assert_allclose(jax.jit(losses.feature_mse)(s, t), want, rtol=1e-6)


def test_cosine_distance_matches_numpy():
    s, t = _pair(1)
    want = np.zeros((2, 3))
    for b in range(2):
        for i in range(3):
            u, v = s[b, i].astype(np.float64), t[b, i].astype(np.float64)
            want[b, i] = 1.0 - u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
    np.testing.assert_allclose(jax.jit(losses.feature_cosine_distance)(s, t), want, rtol=1e-5, atol=1e-6)


def test_cosine_is_scale_free_and_zero_vectors_are_finite():
    s, t = _pair(2)
    cosine = jax.jit(losses.feature_cosine_distance)
    np.testing.assert_allclose(cosine(3.0 * s, 0.5 * t), cosine(s, t), rtol=1e-5, atol=1e-6)
    zero = np.zeros((1, 4), np.float32)
    other = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(cosine(zero, other), [1.0])
    grad = jax.jit(jax.grad(lambda x: jnp.sum(losses.feature_cosine_distance(x, other))))(zero)
    assert np.all(np.isfinite(grad))


def test_mse_gradient_is_the_scaled_difference():
    s, t = _pair(3, shape=(4, 6))
    grad = jax.jit(jax.grad(lambda x: jnp.sum(losses.feature_mse(x, t))))(s)
    np.testing.assert_allclose(grad, 2.0 * (s - t) / 6, rtol=1e-5)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="same shape"):
        losses.feature_mse(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="choose one of"):
        losses.get_feature_distance("l1")
    assert losses.get_feature_distance("cosine") is losses.feature_cosine_distance


def test_fitnets_hint_matches_numpy_and_is_selectable():
    s, t = _pair(4, shape=(2, 3, 6))
    got = jax.jit(losses.fitnets_hint_loss)(s, t)
    np.testing.assert_allclose(got, ref.fitnets_hint(s, t), rtol=1e-6)
    np.testing.assert_allclose(got, 3.0 * np.asarray(losses.feature_mse(s, t)), rtol=1e-6)  # D / 2 times the MSE
    grad = jax.jit(jax.grad(lambda x: jnp.sum(losses.fitnets_hint_loss(x, t))))(s)
    np.testing.assert_allclose(grad, s - t, rtol=1e-6)  # d/ds of (1/2)||s - t||^2
    assert losses.get_feature_distance("fitnets") is losses.fitnets_hint_loss
    with pytest.raises(ValueError, match="same shape"):
        losses.fitnets_hint_loss(np.zeros((2, 3)), np.zeros((2, 4)))
