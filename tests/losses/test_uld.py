"""ULD: the sorted-probability distance against numpy, across vocabulary sizes; the helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill import losses
from tests.losses import numpy_reference as ref


@pytest.mark.parametrize("vs,vt", [(7, 9), (9, 7), (5, 5)])
def test_distance_matches_numpy(vs, vt):
    ks = jax.random.split(jax.random.key(vs * vt), 2)
    s = jax.random.normal(ks[0], (2, 3, vs)) * 2
    t = jax.random.normal(ks[1], (2, 3, vt)) * 2
    got = losses.uld_distance(s, t, temperature=1.5)
    np.testing.assert_allclose(got, ref.uld(s, t, temperature=1.5), rtol=1e-5, atol=1e-6)


def test_distance_is_zero_for_permuted_vocabularies():
    s = jnp.log(jnp.array([[[0.5, 0.3, 0.2]]]))
    t = jnp.log(jnp.array([[[0.2, 0.0, 0.5, 0.3]]]))
    np.testing.assert_allclose(losses.uld_distance(s, t, 1.0), [[0.0]], atol=1e-6)


def test_sorted_l1_distance_of_probabilities_is_uld():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(2, 4, 5)), rng.normal(size=(2, 4, 8))
    got = losses.sorted_l1_distance(jnp.asarray(ref.softmax(s), jnp.float32), jnp.asarray(ref.softmax(t), jnp.float32))
    np.testing.assert_allclose(got, ref.uld(s, t), rtol=1e-5, atol=1e-6)
    # Sub-distributions (the unmatched part of a vocabulary) are compared as they are.
    x, y = [0.1, 0.3], [0.2, 0.05, 0.1]
    np.testing.assert_allclose(losses.sorted_l1_distance(jnp.array(x), jnp.array(y)), ref.sorted_l1(x, y), rtol=1e-6)


def test_gather_positions_and_padding():
    values = jnp.arange(2 * 4 * 3).reshape(2, 4, 3)
    index = jnp.array([[3, 0], [1, 1]])
    np.testing.assert_array_equal(losses.gather_positions(values, index),
                                  np.asarray(values)[np.arange(2)[:, None], np.asarray(index)])
    padded = losses.pad_vocabulary(jnp.ones((2, 3)), 5)
    np.testing.assert_array_equal(padded, [[1, 1, 1, 0, 0]] * 2)
    np.testing.assert_allclose(losses.sorted_probs_desc(jnp.log(jnp.array([0.2, 0.5, 0.3]))), [0.5, 0.3, 0.2],
                               rtol=1e-6)
