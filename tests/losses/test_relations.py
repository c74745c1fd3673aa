"""Relation kernels (cosine MSE, RKD distance/angle, similarity-preserving) against float64 numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill import losses
from jdistill.losses import relations
from tests.losses import numpy_reference as ref

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


# ---- RKD distance / angle (Park et al., 2019) and similarity-preserving KD (Tung & Mori, 2019). ----

RELATION_KERNELS = {
    "rkd_distance": (losses.rkd_distance_loss, ref.rkd_distance),
    "rkd_angle": (losses.rkd_angle_loss, ref.rkd_angle),
    "sp": (losses.similarity_preserving_loss, ref.similarity_preserving),
}


def _groups(seed, groups=3, points=6):
    """Student width 3, teacher width 7; masks with a prompt, padding, and a group with one selected point."""
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(groups, points, 3)).astype(np.float32)
    t = (rng.normal(size=(groups, points, 7)) * 2.0 + 0.5).astype(np.float32)
    mask = np.ones((groups, points), np.float32)
    mask[:, 0] = 0.0  # prompt
    mask[1, -1:] = 0.0  # padding
    if groups > 2:
        mask[2, 2:] = 0.0  # a single selected point: no pair, no angle
    return s, t, mask


@pytest.mark.parametrize("name", sorted(RELATION_KERNELS))
def test_relation_kernels_match_numpy(name):
    kernel, reference = RELATION_KERNELS[name]
    s, t, mask = _groups(10)
    got = np.asarray(jax.jit(kernel)(s, t, mask))
    want = reference(s, t, mask)
    assert np.abs(want[:2]).min(initial=np.inf, where=mask[:2] > 0) > 1e-4  # real values, not zeros
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-7)
    np.testing.assert_array_equal(got[mask == 0], 0.0)


@pytest.mark.parametrize("name", ["rkd_distance", "rkd_angle"])
def test_rkd_huber_threshold_switches_between_quadratic_and_linear(name):
    kernel, reference = RELATION_KERNELS[name]
    s, t, mask = _groups(11)
    for delta in (1.0, 0.05):
        got = jax.jit(lambda a, b, m, delta=delta: kernel(a, b, m, delta=delta))(s, t, mask)
        np.testing.assert_allclose(got, reference(s, t, mask, delta=delta), rtol=2e-5, atol=2e-7)
    # delta = 0.05 puts most differences on the linear branch: the two settings differ.
    assert not np.allclose(reference(s, t, mask, delta=1.0), reference(s, t, mask, delta=0.05))


def test_sample_relations_are_one_group_of_pooled_states():
    s, t, mask = _setup(6)
    valid = mask.any(-1)
    pooled_s, pooled_t = losses.masked_mean_pool(s, mask), losses.masked_mean_pool(t, mask)
    for name, (kernel, reference) in RELATION_KERNELS.items():
        got = jax.jit(kernel)(pooled_s[None], pooled_t[None], valid[None])
        np.testing.assert_allclose(got, reference(pooled_s[None], pooled_t[None], valid[None]), rtol=2e-5,
                                   atol=1e-7, err_msg=name)


@pytest.mark.parametrize("name", sorted(RELATION_KERNELS))
def test_unselected_points_do_not_change_the_selected_ones(name):
    kernel = jax.jit(RELATION_KERNELS[name][0])
    s, t, mask = _groups(12)
    s2, t2 = s.copy(), t.copy()
    s2[mask == 0] = 1e4
    t2[mask == 0] = -3e3
    np.testing.assert_allclose(kernel(s2, t2, mask), kernel(s, t, mask), rtol=1e-6, atol=1e-8)


def test_invariances_rkd_ignores_translation_rotation_and_scale_sp_only_rotation_and_scale():
    s, _, mask = _groups(13)
    rotation, _ = np.linalg.qr(np.random.default_rng(14).normal(size=(3, 3)))
    moved = (s @ rotation.astype(np.float32)) * 5.0 + np.float32(3.0)
    for name in ("rkd_distance", "rkd_angle"):
        np.testing.assert_allclose(jax.jit(RELATION_KERNELS[name][0])(moved, s, mask), np.zeros_like(mask),
                                   atol=2e-5, err_msg=name)
    sp = jax.jit(losses.similarity_preserving_loss)
    np.testing.assert_allclose(sp((s @ rotation.astype(np.float32)) * 5.0, s, mask), np.zeros_like(mask), atol=1e-5)
    assert float(jnp.max(sp(moved, s, mask))) > 1e-3  # the Gram matrix of raw states sees a translation


@pytest.mark.parametrize("name", sorted(RELATION_KERNELS))
def test_gradients_match_finite_differences_of_the_reference(name):
    kernel, reference = RELATION_KERNELS[name]
    s, t, mask = _groups(15, groups=2, points=4)
    weights = np.random.default_rng(16).uniform(0.5, 1.5, size=mask.shape)
    got = jax.jit(jax.grad(lambda x: jnp.sum(kernel(x, t, mask) * weights)))(s)
    want = ref.numeric_grad(lambda x: np.sum(reference(x, t, mask) * weights), s, eps=1e-5)
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-5)


@pytest.mark.parametrize("name", sorted(RELATION_KERNELS))
def test_duplicate_and_zero_points_keep_values_and_gradients_finite(name):
    kernel = RELATION_KERNELS[name][0]
    s = np.array([[[1.0, 2.0], [1.0, 2.0], [0.0, 0.0], [3.0, -1.0]]], np.float32)  # a duplicate and a zero point
    t = np.array([[[0.5], [2.0], [-1.0], [0.0]]], np.float32)
    mask = np.ones((1, 4), np.float32)
    value = jax.jit(kernel)(s, t, mask)
    grad = jax.jit(jax.grad(lambda x: jnp.sum(kernel(x, t, mask))))(s)
    assert np.isfinite(value).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(value, RELATION_KERNELS[name][1](s, t, mask), rtol=1e-4, atol=1e-6)


def test_angle_vertex_blocks_with_a_remainder_give_the_same_values(monkeypatch):
    s, t, mask = _groups(17, groups=2, points=5)

    def value_and_grad(a):
        return jax.value_and_grad(lambda x: jnp.sum(losses.rkd_angle_loss(x, t, mask)))(a)

    whole_value, whole_grad = jax.jit(value_and_grad)(s)
    monkeypatch.setattr(relations, "_ANGLE_BLOCK_ELEMENTS", 2 * 2 * 5 * 5)  # blocks of 2 vertices: 2 + 2 + 1
    blocked_value, blocked_grad = jax.jit(value_and_grad)(s)  # a new trace reads the patched block size
    np.testing.assert_allclose(blocked_value, np.sum(ref.rkd_angle(s, t, mask)), rtol=1e-5)
    np.testing.assert_allclose(blocked_value, whole_value, rtol=1e-6)
    np.testing.assert_allclose(blocked_grad, whole_grad, rtol=1e-5, atol=1e-7)
    assert np.abs(np.asarray(whole_grad)).max() > 1e-3


@pytest.mark.parametrize("name", sorted(RELATION_KERNELS))
def test_relation_kernel_errors_name_the_problem(name):
    kernel = RELATION_KERNELS[name][0]
    with pytest.raises(ValueError, match=r"same \[G, N\]"):
        kernel(np.zeros((2, 4, 3)), np.zeros((2, 5, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"same \[G, N\]"):
        kernel(np.zeros((4, 3)), np.zeros((4, 3)), np.ones((4,)))
    with pytest.raises(ValueError, match="mask"):
        kernel(np.zeros((2, 4, 3)), np.zeros((2, 4, 5)), np.ones((2, 5)))
    s, t, _ = _groups(18)
    np.testing.assert_allclose(kernel(s, t, None), kernel(s, t, np.ones(s.shape[:2])), rtol=1e-6)


def test_rkd_needs_three_points_sp_two():
    """Two points: one normalised distance (1 for both models) and no proper angle, so RKD is 0; SP is not."""
    s = np.array([[[1.0, 1.0], [1.0, 0.0], [5.0, 5.0]]], np.float32)
    t = np.array([[[-1.0], [3.0], [4.0]]], np.float32)
    two = np.array([[1.0, 1.0, 0.0]], np.float32)
    np.testing.assert_array_equal(losses.rkd_distance_loss(s, t, two), 0.0)
    np.testing.assert_array_equal(losses.rkd_angle_loss(s, t, two), 0.0)
    assert float(losses.similarity_preserving_loss(s, t, two)[0, 0]) > 0.1
    assert float(losses.rkd_distance_loss(s, t)[0, 0]) > 0.01 and float(losses.rkd_angle_loss(s, t)[0, 0]) > 0.01


@pytest.mark.parametrize("name", ["rkd_distance", "rkd_angle"])
def test_rkd_is_exact_under_a_large_common_offset(name):
    """LLM states share large components; the kernels centre the points before the Gram identity."""
    kernel = jax.jit(RELATION_KERNELS[name][0])
    s, _, mask = _groups(19)
    shifted = s + np.float32(1e4)
    np.testing.assert_allclose(kernel(shifted, s, mask), np.zeros_like(mask), atol=1e-6)
