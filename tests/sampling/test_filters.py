"""The logit filters as pure functions: kept sets, ties, composition, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill.sampling import filters


@pytest.fixture(autouse=True, params=["pairwise", "bisection"])
def algorithm(request, monkeypatch):
    """Every test runs with both threshold algorithms."""
    if request.param == "bisection":
        monkeypatch.setattr(filters, "PAIRWISE_MAX_VOCAB", 0)
    return request.param


def kept(logits):
    return np.isfinite(np.asarray(logits))


def log_probs(*probs):
    return jnp.log(jnp.asarray([probs], jnp.float32))


def test_temperature_divides_logits():
    logits = jnp.asarray([[1.0, 2.0, -4.0]], jnp.bfloat16)
    out = filters.apply_temperature(logits, 0.5)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, [[2.0, 4.0, -8.0]])


def test_top_k_keeps_the_k_largest():
    logits = jnp.asarray([[0.1, 3.0, -1.0, 2.0, 0.5], [5.0, 4.0, 3.0, 2.0, 1.0]])
    out = filters.top_k_filter(logits, 2)
    np.testing.assert_array_equal(
        kept(out), [[False, True, False, True, False], [True, True, False, False, False]]
    )
    np.testing.assert_array_equal(np.asarray(out)[kept(out)], [3.0, 2.0, 5.0, 4.0])


def test_top_k_keeps_ties_and_is_off_at_zero_or_vocab_size():
    logits = jnp.asarray([[1.0, 2.0, 2.0, 0.0]])
    np.testing.assert_array_equal(kept(filters.top_k_filter(logits, 2)), [[False, True, True, False]])
    np.testing.assert_array_equal(kept(filters.top_k_filter(logits, 1)), [[False, True, True, False]])
    assert kept(filters.top_k_filter(logits, 0)).all()
    assert kept(filters.top_k_filter(logits, 4)).all()


@pytest.mark.parametrize(
    "top_p, expected",
    [
        (0.5, [True, False, False, False]),  # 0.5 alone reaches 0.5
        (0.51, [True, True, False, False]),
        (0.8, [True, True, False, False]),  # 0.5 + 0.3 = 0.8 reaches 0.8
        (0.81, [True, True, True, False]),
        (1.0, [True, True, True, True]),
        (1e-6, [True, False, False, False]),  # the top token is always kept
    ],
)
def test_top_p_keeps_the_smallest_set_reaching_top_p(top_p, expected):
    logits = log_probs(0.5, 0.3, 0.15, 0.05)
    # Shuffle the vocabulary order: the filter must not depend on it.
    order = np.asarray([2, 0, 3, 1])
    out = filters.top_p_filter(logits[:, order], top_p)
    np.testing.assert_array_equal(kept(out)[0], np.asarray(expected)[order])


def test_top_p_per_row_values_and_random_rows():
    logits = jax.random.normal(jax.random.key(0), (64, 50)) * 2.0
    top_p = jnp.linspace(0.05, 1.0, 64)
    out = np.asarray(filters.top_p_filter(logits, top_p))
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    for row in range(64):
        order = np.argsort(-probs[row])
        mass_before = np.cumsum(probs[row][order]) - probs[row][order]
        expected = mass_before < float(top_p[row]) - 1e-6
        expected[0] = True
        np.testing.assert_array_equal(kept(out[row])[order][expected], True)
        # Everything kept beyond the expected set is within float error of the cut.
        extra = kept(out[row])[order] & ~expected
        assert np.all(np.abs(mass_before[extra] - float(top_p[row])) < 1e-5)


def test_min_p_drops_tokens_below_a_fraction_of_the_top_probability():
    logits = log_probs(0.5, 0.3, 0.15, 0.05)
    np.testing.assert_array_equal(kept(filters.min_p_filter(logits, 0.2))[0], [True, True, True, False])
    np.testing.assert_array_equal(kept(filters.min_p_filter(logits, 0.5))[0], [True, True, False, False])
    np.testing.assert_array_equal(kept(filters.min_p_filter(logits, 1.0))[0], [True, False, False, False])
    assert kept(filters.min_p_filter(logits, 0.0)).all()


def test_filter_logits_applies_temperature_then_top_k_then_top_p():
    logits = log_probs(0.4, 0.3, 0.2, 0.1)
    flags = filters.FilterFlags(top_k=3, use_top_p=True)
    # After top-k the kept probabilities renormalise to 4/9, 3/9, 2/9: top-p 0.7
    # then needs the first two (4/9 < 0.7 <= 7/9).
    out = filters.filter_logits(logits, flags, temperature=1.0, top_p=0.7, min_p=0.0)
    np.testing.assert_array_equal(kept(out)[0], [True, True, False, False])
    # Temperature 0.5 squares the ratios before the other filters.
    out = filters.filter_logits(logits, filters.FilterFlags(), temperature=0.5, top_p=1.0, min_p=0.0)
    np.testing.assert_allclose(out, 2.0 * logits, rtol=1e-6)


def test_filters_preserve_minus_infinity_entries():
    logits = jnp.asarray([[0.0, -jnp.inf, 1.0, -jnp.inf]])
    for out in (
        filters.top_k_filter(logits, 3),
        filters.top_p_filter(logits, 0.999),
        filters.min_p_filter(logits, 0.01),
    ):
        np.testing.assert_array_equal(kept(out), [[True, False, True, False]])


def test_flags_from_settings():
    flags = filters.FilterFlags.from_settings
    assert flags(temperature=0.0, top_k=5, top_p=0.5, min_p=0.1) == filters.FilterFlags(greedy=True)
    assert flags(temperature=0.7, top_k=0, top_p=1.0, min_p=0.0) == filters.FilterFlags()
    assert flags(temperature=1.0, top_k=5, top_p=0.9, min_p=0.1) == filters.FilterFlags(
        top_k=5, use_top_p=True, use_min_p=True
    )
    for bad in (
        dict(temperature=-1.0, top_k=0, top_p=1.0, min_p=0.0),
        dict(temperature=1.0, top_k=-1, top_p=1.0, min_p=0.0),
        dict(temperature=1.0, top_k=0, top_p=0.0, min_p=0.0),
        dict(temperature=1.0, top_k=0, top_p=1.5, min_p=0.0),
        dict(temperature=1.0, top_k=0, top_p=1.0, min_p=2.0),
    ):
        with pytest.raises(ValueError):
            flags(**bad)


@pytest.mark.parametrize("k", [1, 7, 100])
def test_pairwise_and_bisection_thresholds_agree(monkeypatch, k):
    """Both sort-free algorithms keep the same sets (ties, -inf and negative rows included)."""
    vocab = filters.PAIRWISE_MAX_VOCAB
    logits = 3.0 * jax.random.normal(jax.random.key(k), (8, vocab))
    logits = logits.at[:, 10:20].set(logits[:, :1])  # exact ties with each row's first entry
    logits = logits.at[1, 100:].set(-jnp.inf)  # a row with few finite entries
    logits = logits.at[2].multiply(-1.0)  # mostly negative values
    top_p = jnp.linspace(0.05, 0.99, 8)
    pairwise = (filters.top_k_filter(logits, k), filters.top_p_filter(logits, top_p))
    monkeypatch.setattr(filters, "PAIRWISE_MAX_VOCAB", 0)
    bisected = (filters.top_k_filter(logits, k), filters.top_p_filter(logits, top_p))
    for got, want in zip(bisected, pairwise):
        np.testing.assert_array_equal(kept(got), kept(want))
        np.testing.assert_array_equal(np.asarray(got)[kept(got)], np.asarray(want)[kept(want)])


def test_ordered_keys_follow_float_order():
    values = jnp.asarray([[-jnp.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, jnp.inf]])
    keys = np.asarray(filters.ordered_keys(values)).astype(np.int64)[0]
    assert np.all(np.diff(keys) >= 0)
    assert keys[3] + 1 == keys[4]  # -0.0 sorts just below +0.0
