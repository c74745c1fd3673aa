"""Attention transfer KL against numpy, with head averaging and head mapping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill import losses
from tests.losses import numpy_reference as ref

transfer = jax.jit(losses.attention_transfer, static_argnames="heads")


def _causal_probs(seed, batch, heads, length):
    """Random causal attention distributions [B, H, T, T] (future keys exactly 0)."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(batch, heads, length, length)) * 2.0
    scores = np.where(np.tril(np.ones((length, length), bool)), scores, -np.inf)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _kl_rows(p_t, p_s):
    """sum_j p_t log(p_t / p_s) over the last axis, 0 log 0 = 0 (float64)."""
    p_t, p_s = np.asarray(p_t, np.float64), np.asarray(p_s, np.float64)
    out = np.zeros(p_t.shape[:-1])
    for idx in np.ndindex(out.shape):
        out[idx] = sum(a * np.log(a / b) for a, b in zip(p_t[idx], p_s[idx]) if a > 0)
    return out


def test_attention_kl_matches_numpy():
    s, t = _causal_probs(0, 2, 3, 4), _causal_probs(1, 2, 3, 4)
    np.testing.assert_allclose(jax.jit(losses.attention_kl)(s, t), _kl_rows(t, s), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(jax.jit(losses.attention_kl)(s, s), np.zeros((2, 3, 4)), atol=1e-6)


def test_mean_heads_compare_the_head_averages():
    s, t = _causal_probs(2, 2, 2, 5), _causal_probs(3, 2, 4, 5)  # 2 student heads, 4 teacher heads
    want = _kl_rows(t.astype(np.float64).mean(1), s.astype(np.float64).mean(1))
    np.testing.assert_allclose(transfer(s, t, heads="mean"), want, rtol=1e-5, atol=1e-7)


def test_mapped_heads_average_teacher_groups_then_compare_head_by_head():
    s, t = _causal_probs(4, 2, 2, 5), _causal_probs(5, 2, 4, 5)
    t64 = t.astype(np.float64)
    grouped = np.stack([t64[:, 0:2].mean(1), t64[:, 2:4].mean(1)], axis=1)  # teacher heads {0,1} -> 0, {2,3} -> 1
    want = _kl_rows(grouped, s).mean(axis=1)
    np.testing.assert_allclose(transfer(s, t, heads="mapped"), want, rtol=1e-5, atol=1e-7)
    # More student heads than teacher heads: the student's are grouped.
    want_swapped = _kl_rows(s, np.stack([t64[:, 0:2].mean(1), t64[:, 2:4].mean(1)], axis=1)).mean(axis=1)
    np.testing.assert_allclose(transfer(t, s, heads="mapped"), want_swapped, rtol=1e-5, atol=1e-7)


def test_underflowed_student_probability_stays_finite_with_finite_gradient():
    t = jnp.array([[[[0.5, 0.5]]]])
    s = jnp.array([[[[1.0, 0.0]]]])
    value = transfer(s, t)
    assert np.isfinite(value).all() and float(value[0, 0]) > 10.0
    grad = jax.jit(jax.grad(lambda x: jnp.sum(losses.attention_transfer(x, t))))(s)
    assert np.isfinite(grad).all()


def test_head_mapping_errors():
    s, t = _causal_probs(6, 1, 2, 3), _causal_probs(7, 1, 3, 3)
    with pytest.raises(ValueError, match="heads='mean'"):
        losses.attention_transfer(s, t, heads="mapped")
    with pytest.raises(ValueError, match="heads must be"):
        losses.attention_transfer(s, t, heads="first")
    np.testing.assert_allclose(
        transfer(s, t, heads="mean"),
        _kl_rows(t.astype(np.float64).mean(1), s.astype(np.float64).mean(1)), rtol=1e-5, atol=1e-7,
    )


def test_minilm_compares_heads_one_to_one_and_matches_numpy():
    s, t = _causal_probs(8, 2, 3, 5), _causal_probs(9, 2, 3, 5)
    got = jax.jit(losses.minilm_attention_loss)(s, t)
    np.testing.assert_allclose(got, ref.minilm_attention(s, t), rtol=1e-5, atol=1e-7)
    # Per head, not of the head average: swapping two student heads changes the value.
    swapped = s[:, [1, 0, 2]]
    assert np.abs(np.asarray(losses.minilm_attention_loss(swapped, t)) - np.asarray(got)).max() > 1e-2
    np.testing.assert_allclose(jax.jit(losses.minilm_attention_loss)(t, t), np.zeros((2, 5)), atol=1e-6)


def test_minilm_needs_equal_head_counts():
    s, t = _causal_probs(10, 1, 2, 3), _causal_probs(11, 1, 4, 3)
    with pytest.raises(ValueError, match=r"equal head counts, got student 2 and teacher 4.*heads='mapped'"):
        losses.minilm_attention_loss(s, t)
    with pytest.raises(ValueError, match="same tokens"):
        losses.minilm_attention_loss(s, _causal_probs(12, 1, 2, 4))
    with pytest.raises(ValueError, match=r"\[B, H, T, S\]"):
        losses.minilm_attention_loss(s[0], t[0])
