"""MinED's kernels: teacher logits projected through a vocabulary map, the per-token KL-or-NLL term."""

import jax.numpy as jnp
import numpy as np

from jdistill import losses
from tests.losses import numpy_reference as ref


def test_project_teacher_logits_against_numpy():
    zt = np.random.default_rng(0).normal(size=(2, 3, 5))
    s2t = np.array([4, -1, 0, 0, 2, -1])
    got = losses.project_teacher_logits(jnp.asarray(zt), s2t)
    want = np.where(s2t >= 0, zt[..., np.maximum(s2t, 0)], -np.inf)
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    np.testing.assert_allclose(np.where(np.isinf(want), 0, got), np.where(np.isinf(want), 0, want), rtol=1e-6)


def test_mined_kd_is_kl_where_aligned_else_gold_nll():
    rng = np.random.default_rng(1)
    zs, zt = rng.normal(size=(2, 3, 6)), rng.normal(size=(2, 3, 5))
    s2t = np.array([4, -1, 0, 0, 2, -1])
    targets = rng.integers(0, 6, size=(2, 3))
    aligned = np.array([[1, 0, 1], [0, 1, 1]], np.float32)
    projected = losses.project_teacher_logits(jnp.asarray(zt, jnp.float32), s2t)
    got = losses.mined_kd(jnp.asarray(zs, jnp.float32), projected, jnp.asarray(targets), jnp.asarray(aligned), 2.0)
    q = ref.softmax(zs, 2.0)
    p = ref.softmax(np.where(s2t >= 0, zt[..., np.maximum(s2t, 0)], -np.inf), 2.0)
    nll = -np.log(np.take_along_axis(q, targets[..., None], axis=-1)[..., 0])
    np.testing.assert_allclose(got, np.where(aligned > 0, ref.kl(p, q), nll), rtol=1e-5)
