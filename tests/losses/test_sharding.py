"""Every kernel, jitted over inputs sharded on an 8-device mesh, equals its single-device result."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jdistill import losses
from tests.losses.test_divergences import CASES, NAMES, random_logits


@pytest.fixture(scope="module")
def mesh():
    assert jax.device_count() == 8, "tests/conftest.py should provide 8 CPU devices"
    return jax.make_mesh((2, 4), ("data", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def _sharded(mesh, x, spec):
    return jax.device_put(x, NamedSharding(mesh, spec))


@pytest.mark.parametrize("name", NAMES)
def test_divergence_sharded_over_batch_and_vocabulary(mesh, name):
    kernel, _, kwargs = CASES[name]
    s, t = random_logits(seed=31, shape=(4, 6, 32), shared_neg_inf=0.1)
    spec = P("data", None, "tensor")  # batch over 'data', vocabulary over 'tensor'
    f = jax.jit(functools.partial(kernel, **kwargs), out_shardings=NamedSharding(mesh, P("data", None)))
    got = f(_sharded(mesh, s, spec), _sharded(mesh, t, spec))
    want = jax.jit(functools.partial(kernel, **kwargs))(s, t)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    grad_fn = jax.jit(jax.grad(lambda a, b: kernel(a, b, **kwargs).sum()))
    np.testing.assert_allclose(
        grad_fn(_sharded(mesh, s, spec), _sharded(mesh, t, spec)), grad_fn(s, t), rtol=1e-4, atol=1e-6
    )


def test_reductions_and_cald_sharded(mesh):
    s, t = random_logits(seed=32, shape=(4, 6, 32), shared_neg_inf=0.0)
    mask = np.random.default_rng(0).random((4, 6)) < 0.7
    spec = P("data", None, "tensor")
    alpha = jnp.array([0.1, 0.05, 0.02, 0.01])
    f = lambda a, b, m: losses.cald(a, b, m, b, a, m, alpha_t=alpha, alpha_s=alpha, beta=0.6)  # noqa: E731
    got = jax.jit(f)(_sharded(mesh, s, spec), _sharded(mesh, t, spec), _sharded(mesh, mask, P("data", None)))
    np.testing.assert_allclose(got, jax.jit(f)(s, t, mask), rtol=1e-5)
    for reduce in (losses.token_mean, losses.sequence_mean):
        values = losses.forward_kl(s, t)
        got = jax.jit(reduce)(_sharded(mesh, values, P("data", None)), _sharded(mesh, mask, P("data", None)))
        np.testing.assert_allclose(got, reduce(values, mask), rtol=1e-6)


def test_cross_model_attention_sharded_over_batch(mesh):
    from tests.losses.test_cross_model_attention import PARAMS, _inputs

    x = _inputs(6)
    x = {k: np.concatenate([v, v[::-1]], axis=0) for k, v in x.items()}  # batch 4
    sharded = {k: _sharded(mesh, v, P("data", *([None] * (v.ndim - 1)))) for k, v in x.items()}
    got = jax.jit(losses.cross_model_attention)(PARAMS, **sharded)
    want = jax.jit(losses.cross_model_attention)(PARAMS, **x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
