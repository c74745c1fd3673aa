"""token_mean / sequence_mean against numpy, and exactness under gradient accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill import losses
from tests.losses import numpy_reference as ref


def _values_and_mask(seed=0, shape=(4, 6)):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=shape).astype(np.float32)
    mask = rng.random(shape) < 0.6
    mask[0] = False  # one sequence without response tokens
    mask[1, 0] = True
    return values, mask


def test_token_mean_matches_numpy():
    values, mask = _values_and_mask()
    np.testing.assert_allclose(jax.jit(losses.token_mean)(values, mask), ref.token_mean(values, mask), rtol=1e-6)
    np.testing.assert_allclose(
        losses.token_mean(values, mask, normalizer=100), ref.token_mean(values, mask, 100), rtol=1e-6
    )


def test_sequence_mean_matches_numpy_and_skips_empty_sequences():
    values, mask = _values_and_mask()
    np.testing.assert_allclose(jax.jit(losses.sequence_mean)(values, mask), ref.sequence_mean(values, mask), rtol=1e-6)


def test_masked_nan_and_inf_do_not_leak():
    values = np.array([[1.0, np.nan, np.inf], [3.0, -np.inf, 5.0]], np.float32)
    mask = np.array([[1, 0, 0], [1, 0, 1]])
    assert float(losses.token_mean(values, mask)) == pytest.approx(3.0)
    assert float(losses.sequence_mean(values, mask)) == pytest.approx((1.0 + 4.0) / 2)
    grad = jax.grad(lambda v: losses.token_mean(v, mask))(jnp.asarray(values))
    assert np.all(np.isfinite(grad))


def test_nothing_selected_gives_zero():
    values = jnp.ones((2, 3))
    mask = jnp.zeros((2, 3), bool)
    assert float(losses.token_mean(values, mask)) == 0.0
    assert float(losses.sequence_mean(values, mask)) == 0.0


def test_global_normalizer_makes_gradient_accumulation_exact():
    """Micro-batch losses normalised by the global count add up to the full-batch loss and gradient."""
    values, mask = _values_and_mask(seed=1, shape=(8, 5))
    weights = jnp.asarray(np.random.default_rng(2).normal(size=(8, 5)), jnp.float32)

    def loss(w, v, m, normalizer=None):
        return losses.token_mean(w * v, m, normalizer=normalizer)

    full_value, full_grad = jax.value_and_grad(loss)(weights, values, mask)
    total = int(mask.sum())
    acc_value, acc_grad = 0.0, jnp.zeros_like(weights)
    for rows in np.split(np.arange(8), 4):
        w_sub = weights[rows]
        v, g = jax.value_and_grad(loss)(w_sub, values[rows], mask[rows], total)
        acc_value += v
        acc_grad = acc_grad.at[rows].set(g)
    np.testing.assert_allclose(acc_value, full_value, rtol=1e-6)
    np.testing.assert_allclose(acc_grad, full_grad, rtol=1e-6)
    # Without the global count, averaging micro-batch means is *not* the same.
    naive = np.mean([float(loss(weights[r], values[r], mask[r])) for r in np.split(np.arange(8), 4)])
    assert abs(naive - float(full_value)) > 1e-4


def test_sequence_normalizer():
    values, mask = _values_and_mask(seed=3)
    per_seq_total = losses.sequence_mean(values, mask) * 3  # three non-empty sequences
    np.testing.assert_allclose(losses.sequence_mean(values, mask, normalizer=6), per_seq_total / 6, rtol=1e-6)


def test_shape_mismatch_and_unknown_reduction():
    with pytest.raises(ValueError, match="mask \\(2, 2\\) must have the shape of values \\(2, 3\\)"):
        losses.token_mean(jnp.ones((2, 3)), jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="Unknown reduction 'mean'"):
        losses.get_reduction("mean")
