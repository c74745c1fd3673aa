"""Fused losses with a final-logit soft-cap (Gemma 2) equal the losses of the capped logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill import losses

B, T, D_S, D_T, V = 2, 7, 8, 12, 40
CAP_S, CAP_T = 1.5, 2.5  # small enough that the cap changes the loss


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    hs = rng.normal(size=(B, T, D_S)).astype(np.float32)
    ht = rng.normal(size=(B, T, D_T)).astype(np.float32)
    ws = (rng.normal(size=(D_S, V)) * 2 / np.sqrt(D_S)).astype(np.float32)
    wt = (rng.normal(size=(D_T, V)) * 2 / np.sqrt(D_T)).astype(np.float32)
    mask = np.ones((B, T), bool)
    mask[:, :2] = False
    mask[1, 5:] = False
    labels = rng.integers(0, V, size=(B, T))
    return hs, ws, ht, wt, mask, labels


def _cap(z, cap):
    return jnp.tanh(z / cap) * cap


def test_fused_losses_apply_the_soft_cap_in_values_and_gradients():
    hs, ws, ht, wt, mask, labels = _inputs()
    alpha = np.array([0.2, 0.05], np.float32)

    fns = {
        "kd/fused": lambda hs, ws, ht, wt: losses.fused_kd_loss(
            hs, ws, ht, wt, mask, divergence="skew_forward_kl", alpha=alpha, temperature=1.3, chunk_size=5,
            logit_softcap=(CAP_S, CAP_T),
        ),
        "kd/plain": lambda hs, ws, ht, wt: losses.token_mean(
            losses.skew_forward_kl(_cap(hs @ ws, CAP_S), _cap(ht @ wt, CAP_T), alpha=alpha, temperature=1.3), mask
        ),
        "kd/uncapped": lambda hs, ws, ht, wt: losses.fused_kd_loss(
            hs, ws, ht, wt, mask, divergence="skew_forward_kl", alpha=alpha, temperature=1.3, chunk_size=5,
        ),
        "ce/fused": lambda hs, ws, ht, wt: losses.fused_cross_entropy(
            hs, ws.T, labels, mask, head_layout="vd", chunk_size=4, logit_softcap=CAP_S
        ),
        "ce/plain": lambda hs, ws, ht, wt: losses.token_mean(
            losses.token_cross_entropy(_cap(hs @ ws, CAP_S), labels), mask
        ),
        "cald/fused": lambda hs, ws, ht, wt: losses.fused_cald(
            hs, ht, mask, hs[:, :5], ht[:, :5], mask[:, :5], ws, wt, alpha_t=alpha, alpha_s=alpha, chunk_size=3,
            logit_softcap=CAP_T,
        ),
        "cald/plain": lambda hs, ws, ht, wt: losses.cald(
            _cap(hs @ ws, CAP_T), _cap(ht @ wt, CAP_T), mask, _cap(hs[:, :5] @ ws, CAP_T),
            _cap(ht[:, :5] @ wt, CAP_T), mask[:, :5], alpha_t=alpha, alpha_s=alpha,
        ),
    }
    # Gradients for the two kernels' paths (fused_cald is two fused_kd_loss calls), values for all.
    with_grads = ("kd/fused", "kd/plain", "ce/fused", "ce/plain")
    results = jax.jit(lambda *a: {
        k: jax.value_and_grad(f, argnums=(0, 1, 2, 3))(*a) if k in with_grads else f(*a) for k, f in fns.items()
    })(hs, ws, ht, wt)
    for name in ("kd", "ce", "cald"):
        for got, want in zip(jax.tree.leaves(results[f"{name}/fused"]), jax.tree.leaves(results[f"{name}/plain"])):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
    assert abs(float(results["kd/fused"][0]) - float(results["kd/uncapped"])) > 1e-3


def test_fused_token_logprobs_apply_the_soft_cap():
    hs, ws, _, _, _, labels = _inputs(seed=1)
    got = losses.fused_token_logprobs(hs, ws, labels, chunk_size=3, logit_softcap=CAP_S)
    want = losses.token_logprobs(_cap(hs @ ws, CAP_S), labels)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cap", [0.0, -1.0, "30", (1.0, 2.0, 3.0)])
def test_invalid_soft_caps_are_refused(cap):
    hs, ws, ht, wt, mask, _ = _inputs()
    with pytest.raises(ValueError, match="logit_softcap"):
        losses.fused_kd_loss(hs, ws, ht, wt, mask, logit_softcap=cap)
