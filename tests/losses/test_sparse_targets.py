"""Sparse top-k forward KL against numpy; it is the dense forward KL at k = V."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

from jdistill import losses
from tests.losses import numpy_reference as ref

sparse_kl = jax.jit(losses.sparse_forward_kl)


def _grad(kernel, *args):
    """Jitted gradient of the summed per-token values with respect to the student logits."""
    return jax.jit(jax.grad(lambda x: jnp.sum(kernel(x, *args))))


def _logits(seed, shape=(2, 3, 7)):
    return (np.random.default_rng(seed).normal(size=shape) * 2.0).astype(np.float32)


def _topk(teacher_logits, k):
    log_p = np.log(ref.softmax(teacher_logits))
    ids = np.argsort(-log_p, axis=-1)[..., :k]
    return ids.astype(np.int32), np.take_along_axis(log_p, ids, -1).astype(np.float32)


def _numpy_sparse_kl(student_logits, ids, logprobs):
    q = ref.softmax(student_logits)
    out = np.zeros(ids.shape[:-1])
    for idx in np.ndindex(out.shape):
        p_k = np.exp(logprobs[idx].astype(np.float64))
        q_k = q[idx][ids[idx]]
        p_rest, q_rest = 1.0 - p_k.sum(), 1.0 - q_k.sum()
        total = np.sum(p_k * np.log(p_k / q_k))
        if p_rest > 1e-12:
            total += p_rest * np.log(p_rest / q_rest)
        out[idx] = total
    return out


def test_matches_numpy_with_a_rest_bucket():
    s, t = _logits(0), _logits(1)
    ids, lp = _topk(t, 3)
    np.testing.assert_allclose(sparse_kl(s, ids, lp), _numpy_sparse_kl(s, ids, lp), rtol=1e-5)


def test_whole_vocabulary_equals_dense_forward_kl_values_and_gradients():
    s, t = _logits(2), _logits(3)
    ids, lp = _topk(t, 7)
    sparse = sparse_kl(s, ids, lp)
    np.testing.assert_allclose(sparse, ref.forward_kl(s, t), rtol=1e-5, atol=1e-6)
    g_sparse = _grad(losses.sparse_forward_kl, ids, lp)(s)
    g_dense = _grad(losses.forward_kl, t)(s)
    np.testing.assert_allclose(g_sparse, g_dense, atol=1e-5)


def test_lower_bound_of_the_dense_kl_and_gradient_by_finite_differences():
    s, t = _logits(4), _logits(5)
    ids, lp = _topk(t, 2)
    assert np.all(np.asarray(sparse_kl(s, ids, lp)) <= ref.forward_kl(s, t) + 1e-6)
    check_grads(jax.jit(lambda x: losses.sparse_forward_kl(x, ids, lp)), (s,), order=1, modes=["rev"],
                atol=2e-2, rtol=2e-2)


def test_rounded_targets_above_one_are_rescaled_and_padding_rows_are_finite():
    s = _logits(6, shape=(1, 2, 4))
    ids = np.array([[[0, 1], [0, 0]]], np.int32)  # second row: zero-padded filler (duplicate ids)
    lp = np.array([[[np.log(0.6) + 1e-3, np.log(0.4) + 1e-3], [0.0, 0.0]]], np.float32)
    value = sparse_kl(s, ids, lp)
    rescaled = lp[0, 0] - np.log(np.exp(lp[0, 0].astype(np.float64)).sum())
    np.testing.assert_allclose(value[0, 0], _numpy_sparse_kl(s[:, :1], ids[:, :1], rescaled[None, None])[0, 0],
                               rtol=1e-5)
    grad = _grad(losses.sparse_forward_kl, ids, lp)(s)
    assert np.isfinite(value).all() and np.isfinite(grad).all()
