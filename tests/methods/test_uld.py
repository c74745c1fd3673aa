"""ULD: the sorted-probability distance against numpy, across vocabulary sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill.engine.defaults import base_config
from jdistill.methods import make_method, uld
from tests.losses import numpy_reference as ref
from tests.methods import views


@pytest.mark.parametrize("vs,vt", [(7, 9), (9, 7), (5, 5)])
def test_distance_matches_numpy(vs, vt):
    ks = jax.random.split(jax.random.key(vs * vt), 2)
    s = jax.random.normal(ks[0], (2, 3, vs)) * 2
    t = jax.random.normal(ks[1], (2, 3, vt)) * 2
    got = uld.uld_distance(s, t, temperature=1.5)
    np.testing.assert_allclose(got, ref.uld(s, t, temperature=1.5), rtol=1e-5, atol=1e-6)


def test_distance_is_zero_for_permuted_vocabularies():
    s = jnp.log(jnp.array([[[0.5, 0.3, 0.2]]]))
    t = jnp.log(jnp.array([[[0.2, 0.0, 0.5, 0.3]]]))
    np.testing.assert_allclose(uld.uld_distance(s, t, 1.0), [[0.0]], atol=1e-6)


def test_loss_uses_the_paired_teacher_positions():
    ks = jax.random.split(jax.random.key(1), 2)
    student = views.random_side(ks[0], 1, 4, 3, 6)
    teacher = views.random_side(ks[1], 1, 5, 4, 8)
    batch = views.side_arrays(np.array([[1, 2, 3, 4]]), [2], [4])
    batch["uld_teacher_index"] = np.array([[0, 3, 4, 0]], np.int32)
    batch["uld_mask"] = np.array([[0, 1, 1, 0]], np.float32)
    config = base_config("uld").method
    method = make_method(config)
    total, metrics = method.loss(None, batch, views.view(student), views.view(teacher), views.context(4.0))
    zs = np.asarray(student["hidden"] @ student["head"])[0]
    zt = np.asarray(teacher["hidden"] @ teacher["head"])[0]
    want = (ref.uld(zs[1], zt[3]) + ref.uld(zs[2], zt[4])) / 4.0
    np.testing.assert_allclose(metrics["kd"], want, rtol=1e-5)
    assert method.cross_vocabulary
    grads = jax.grad(lambda t: method.loss(None, batch, views.view(student), views.view(t), views.context(4.0))[0])(
        teacher)
    assert all(float(jnp.abs(g).sum()) == 0 for g in jax.tree.leaves(grads))
