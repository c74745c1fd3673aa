"""Token and sample relation distances (relation-based KD) against numpy."""

import jax
import jax.numpy as jnp
import numpy as np

from jdistill import losses

token_relations = jax.jit(losses.token_relation_distance)


def _cos(u, v):
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    return u @ v / (np.linalg.norm(u) * np.linalg.norm(v))


def _setup(seed):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(2, 5, 3)).astype(np.float32)  # student width 3
    t = rng.normal(size=(2, 5, 7)).astype(np.float32)  # teacher width 7: no projector needed
    mask = np.array([[0, 1, 1, 1, 0], [0, 0, 1, 1, 0]], np.float32)
    return s, t, mask


def test_token_relations_match_numpy():
    s, t, mask = _setup(0)
    want = np.zeros((2, 5))
    for b in range(2):
        sel = np.flatnonzero(mask[b])
        for i in range(5):
            want[b, i] = np.mean([(_cos(s[b, i], s[b, j]) - _cos(t[b, i], t[b, j])) ** 2 for j in sel])
    got = token_relations(s, t, mask)
    np.testing.assert_allclose(np.asarray(got) * mask, want * mask, rtol=1e-5, atol=1e-7)


def test_masked_tokens_do_not_change_the_selected_ones():
    s, t, mask = _setup(1)
    base = token_relations(s, t, mask)
    s2 = s.copy()
    s2[:, 0] = 100.0  # a prompt position
    s2[:, 4] = -3.0  # padding
    np.testing.assert_allclose(np.asarray(token_relations(s2, t, mask)) * mask, np.asarray(base) * mask,
                               rtol=1e-6)


def test_sample_relations_match_numpy():
    s, t, mask = _setup(2)
    rng = np.random.default_rng(3)
    s = np.concatenate([s, rng.normal(size=(1, 5, 3)).astype(np.float32)])
    t = np.concatenate([t, rng.normal(size=(1, 5, 7)).astype(np.float32)])
    mask = np.concatenate([mask, np.zeros((1, 5), np.float32)])  # a row without response tokens
    pooled_s = np.stack([s[b][mask[b] > 0].astype(np.float64).mean(0) for b in range(2)])
    pooled_t = np.stack([t[b][mask[b] > 0].astype(np.float64).mean(0) for b in range(2)])
    pool = jax.jit(losses.masked_mean_pool)
    np.testing.assert_allclose(pool(s, mask)[:2], pooled_s, rtol=1e-5)
    np.testing.assert_allclose(pool(s, mask)[2], np.zeros(3))
    want = np.array([np.mean([(_cos(pooled_s[b], pooled_s[c]) - _cos(pooled_t[b], pooled_t[c])) ** 2
                              for c in range(2)]) for b in range(2)])
    valid = mask.any(-1)
    got = jax.jit(losses.sample_relation_distance)(pool(s, mask), pool(t, mask), valid)
    np.testing.assert_allclose(np.asarray(got)[:2], want, rtol=1e-5, atol=1e-7)


def test_relations_are_invariant_to_scale_and_rotation_and_identical_structure_gives_zero():
    s, t, mask = _setup(4)
    rotation, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(3, 3)))
    s_rotated = (s @ rotation.astype(np.float32)) * 4.0
    np.testing.assert_allclose(token_relations(s_rotated, s, mask) * mask, np.zeros((2, 5)), atol=1e-5)
    grad = jax.jit(jax.grad(lambda x: jnp.sum(losses.token_relation_distance(x, t, mask) * mask)))(s)
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
