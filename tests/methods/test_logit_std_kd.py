"""Logit-standardised KD against a float64 transcription of the authors' ``normalize`` + ``kd_loss``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill.engine.defaults import base_config
from jdistill.methods import logit_std_kd, make_method
from tests.losses import numpy_reference as ref
from tests.methods import views


def release_kd(zs, zt, temperature):
    """mdistiller/distillers/KD.py: normalize (unbiased std, 1e-7) then KL * T^2, per token."""
    def normalize(z):
        z = np.asarray(z, np.float64)
        return (z - z.mean(-1, keepdims=True)) / (1e-7 + z.std(-1, ddof=1, keepdims=True))

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    log_q, log_p = log_softmax(normalize(zs) / temperature), log_softmax(normalize(zt) / temperature)
    return (np.exp(log_p) * (log_p - log_q)).sum(-1) * temperature**2


def test_standardize_matches_numpy_and_is_scale_and_shift_invariant():
    z = np.random.default_rng(0).normal(size=(2, 3, 11)) * 4 + 2
    got = np.asarray(logit_std_kd.standardize(jnp.asarray(z, jnp.float32)))
    want = (z - z.mean(-1, keepdims=True)) / (1e-7 + z.std(-1, ddof=1, keepdims=True))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(logit_std_kd.standardize(jnp.asarray(3 * z + 7, jnp.float32))), got,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("temperature,squared", [(2.0, True), (1.0, True), (3.0, False)])
def test_loss_matches_the_release(temperature, squared):
    c = base_config("logit_std_kd").method
    c.temperature, c.temperature_squared, c.kd_rate, c.vocab_size, c.fused = temperature, squared, 0.3, 0, "off"
    method = make_method(c)
    key = jax.random.key(3)
    student, teacher = views.random_side(key, 2, 5, 4, 13), views.random_side(jax.random.fold_in(key, 1), 2, 5, 6, 13)
    teacher["hidden"] = 3.0 * teacher["hidden"]  # a different logit scale: standardisation removes it
    ids = np.random.default_rng(1).integers(0, 13, size=(2, 5))
    batch = views.side_arrays(ids, prompt_lens=[2, 1], lengths=[5, 4])
    n = float(batch["loss_mask"].sum())
    total, metrics = jax.jit(lambda b: method.loss({}, b, views.view(student), views.view(teacher),
                                                   views.context(n)))(batch)
    zs = np.asarray(student["hidden"] @ student["head"], np.float64)
    zt = np.asarray(teacher["hidden"] @ teacher["head"], np.float64)
    kd_tokens = release_kd(zs, zt, temperature) / (1.0 if squared else temperature**2)
    kd = ref.token_mean(kd_tokens, batch["loss_mask"], n)
    ce = ref.token_mean(ref.cross_entropy(zs, batch["targets"]), batch["loss_mask"], n)
    np.testing.assert_allclose([metrics["kd"], metrics["ce"], total], [kd, ce, 0.7 * ce + 0.3 * kd], rtol=2e-5)


def test_other_divergences_and_the_fused_path_are_refused():
    c = base_config("logit_std_kd").method
    c.divergence = "reverse_kl"
    with pytest.raises(ValueError, match="method.divergence must be 'forward_kl'"):
        make_method(c)
    c = base_config("logit_std_kd").method
    c.fused = "on"
    with pytest.raises(ValueError, match="method.fused='on' is not available for logit_std_kd"):
        make_method(c)
