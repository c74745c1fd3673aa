"""token_cross_entropy against numpy and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jdistill import losses
from tests.losses import numpy_reference as ref


def test_matches_numpy_with_temperature_and_masked_entries():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 9)).astype(np.float32)
    logits[..., 5] = -np.inf
    targets = rng.integers(0, 5, size=(3, 4))
    got = jax.jit(lambda z, y: losses.token_cross_entropy(z, y, temperature=2.0))(logits, targets)
    probs = ref.softmax(logits, temperature=2.0)
    want = -np.log(np.take_along_axis(probs, targets[..., None], -1)[..., 0])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    z = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
    y = jnp.array([1, 3])
    check_grads(lambda a: losses.token_cross_entropy(a, y), (z,), order=1, modes=["rev"], atol=2e-2, rtol=2e-2, eps=1e-3)


def test_bad_arguments():
    with pytest.raises(TypeError, match="integer token ids"):
        losses.token_cross_entropy(jnp.zeros((2, 3)), jnp.zeros((2,), jnp.float32))
    with pytest.raises(ValueError, match="must match logits"):
        losses.token_cross_entropy(jnp.zeros((2, 3)), jnp.zeros((3,), jnp.int32))
