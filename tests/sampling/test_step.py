"""One sampling step on many random rows: filters hold for every drawn token."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill.sampling.filters import FilterFlags
from jdistill.sampling.step import SamplingParams, choose_tokens

ROWS, VOCAB = 2048, 24


def params(temperature=1.0, top_p=1.0, min_p=0.0):
    return SamplingParams(
        temperature=jnp.float32(temperature),
        top_p=jnp.float32(top_p),
        min_p=jnp.float32(min_p),
        eos_ids_E=jnp.full((8,), -1, jnp.int32),
        pad_id=jnp.int32(0),
    )


@functools.partial(jax.jit, static_argnames=("flags", "num_topk"))
def choose(logits, key, flags, sampling_params, num_topk=0):
    return choose_tokens(logits, key, flags, sampling_params, num_topk)


@pytest.fixture(scope="module")
def logits():
    return 2.0 * jax.random.normal(jax.random.key(0), (ROWS, VOCAB))


def allowed_mask(logits, *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0):
    """The filters' kept sets computed with NumPy, in the documented order."""
    z = np.asarray(logits, np.float64) / temperature
    keep = np.ones_like(z, bool)
    if top_k:
        keep &= z >= np.sort(z, -1)[:, -top_k][:, None]
    if top_p < 1.0:
        p = np.where(keep, np.exp(z - z.max(-1, keepdims=True)), 0.0)
        p /= p.sum(-1, keepdims=True)
        order = np.argsort(-p, -1)
        ps = np.take_along_axis(p, order, -1)
        keep_sorted = np.cumsum(ps, -1) - ps < top_p + 1e-6
        keep_p = np.zeros_like(keep)
        np.put_along_axis(keep_p, order, keep_sorted, -1)
        keep &= keep_p
    if min_p > 0.0:
        keep &= z >= z.max(-1, keepdims=True) + np.log(min_p) - 1e-6
    return keep


@pytest.mark.parametrize(
    "settings",
    [
        dict(top_k=1),
        dict(top_k=4),
        dict(top_p=0.3),
        dict(top_p=0.9),
        dict(min_p=0.2),
        dict(temperature=0.5, top_k=8, top_p=0.7, min_p=0.05),
    ],
    ids=str,
)
def test_sampled_tokens_are_always_allowed(logits, settings):
    flags = FilterFlags.from_settings(
        temperature=settings.get("temperature", 1.0),
        top_k=settings.get("top_k", 0),
        top_p=settings.get("top_p", 1.0),
        min_p=settings.get("min_p", 0.0),
    )
    numeric = {k: v for k, v in settings.items() if k != "top_k"}
    choice = choose(logits, jax.random.key(1), flags, params(**numeric))
    allowed = allowed_mask(logits, **settings)
    tokens = np.asarray(choice.token_B)
    assert np.take_along_axis(allowed, tokens[:, None], -1).all()
    # The filters bite: most rows exclude something, and some rows use >1 token.
    assert (allowed.sum(-1) < VOCAB).mean() > 0.5
    if settings != dict(top_k=1):
        assert len(np.unique(tokens)) > 1


def test_greedy_is_argmax_and_logprobs_are_the_model_log_softmax(logits):
    choice = choose(logits, jax.random.key(0), FilterFlags(greedy=True), params(), num_topk=3)
    np.testing.assert_array_equal(choice.token_B, np.argmax(logits, -1))
    log_probs = np.asarray(jax.nn.log_softmax(logits, -1))
    np.testing.assert_allclose(choice.logprob_B, log_probs.max(-1), atol=1e-6)
    np.testing.assert_array_equal(choice.topk_ids_BxK, np.argsort(-log_probs, -1)[:, :3])
    np.testing.assert_allclose(choice.topk_logprobs_BxK, -np.sort(-log_probs, -1)[:, :3], atol=1e-6)


def test_filtered_sampling_frequencies_match_the_filtered_distribution(logits):
    """One row drawn 2048 times under temperature + top-k: chi-square against the target."""
    row = jnp.broadcast_to(logits[:1], (ROWS, VOCAB))
    flags = FilterFlags.from_settings(temperature=0.8, top_k=5, top_p=1.0, min_p=0.0)
    tokens = np.asarray(choose(row, jax.random.key(5), flags, params(temperature=0.8)).token_B)
    z = np.asarray(logits[0], np.float64) / 0.8
    z = np.where(z >= np.sort(z)[-5], z, -np.inf)
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    counts = np.bincount(tokens, minlength=VOCAB)
    assert counts[probs == 0].sum() == 0
    support = probs > 0
    expected = ROWS * probs[support]
    chi2 = np.sum((counts[support] - expected) ** 2 / expected)
    assert chi2 < 25.0  # dof 4: the 0.999 quantile is 18.5
