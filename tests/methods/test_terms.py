"""The shared loss terms: the fused path rebuilds a soft-capped head's logits exactly as the forward does."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jdistill.engine.defaults import base_config
from jdistill.methods import make_method
from jdistill.methods.base import ModelView
from tests import fake_models
from tests.fake_models import FakeModel, FakeOutput


@dataclasses.dataclass(frozen=True)
class CappedConfig:
    final_logit_softcap: float | None


def capped_view(hidden, head, cap, *, with_logits):
    """A model whose forward soft-caps its logits: ``tanh(z / cap) · cap`` (Gemma 2)."""
    logits = jnp.tanh(hidden @ head / cap) * cap if with_logits else None
    return ModelView(FakeOutput(logits, hidden), FakeModel(head.T, head, CappedConfig(cap)))


def test_fused_kd_and_ce_apply_each_heads_soft_cap():
    key = jax.random.key(0)
    ks = jax.random.split(key, 4)
    hs, ws = 3.0 * jax.random.normal(ks[0], (2, 5, 6)), jax.random.normal(ks[1], (6, 11))
    ht, wt = 3.0 * jax.random.normal(ks[2], (2, 5, 8)), jax.random.normal(ks[3], (8, 11))
    ids = np.random.default_rng(0).integers(0, 11, size=(2, 5))
    batch = fake_models.side_arrays(ids, prompt_lens=[2, 1], lengths=[5, 4])
    ctx = fake_models.context(float(batch["loss_mask"].sum()))
    results = {}
    for fused in ("off", "on"):
        c = base_config("kd").method
        c.fused, c.divergence = fused, "reverse_kl"
        method = make_method(c)
        with_logits = fused == "off"
        student = capped_view(hs, ws, 2.0, with_logits=with_logits)
        teacher = capped_view(ht, wt, 5.0, with_logits=with_logits)
        results[fused] = jax.jit(lambda b: method.loss({}, b, student, teacher, ctx))(batch)
    np.testing.assert_allclose(results["on"][1]["ce"], results["off"][1]["ce"], rtol=1e-5)
    np.testing.assert_allclose(results["on"][1]["kd"], results["off"][1]["kd"], rtol=1e-5)
    # The caps matter: without them the fused values would differ.
    raw = jnp.asarray(hs @ ws)
    assert float(jnp.abs(jnp.tanh(raw / 2.0) * 2.0 - raw).max()) > 1.0
