"""The decode loop on a tiny random decoder: cache correctness, EOS, lengths, keys, jit reuse.

Most tests share one compiled program (batch 4, prompt bucket 16, 8 new tokens)
so the file stays fast.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jdistill.sampling import generate, generation, stop_tokens
from jdistill.sampling.generation import padded_eos_array
from jdistill.sampling.stop_policy import token_ids
from tests.sampling.conftest import TINY_VOCAB, count_backend_compiles

NEW = 8


@functools.partial(jax.jit, static_argnums=0)
def _logits(graphdef, state, ids, mask):
    return nnx.merge(graphdef, state)(ids, mask).logits


def full_forward_log_probs(model, prompt_ids, prompt_mask, out):
    """``[B, N, V]`` log-probs of each generated position from one cache-free forward."""
    ids = np.concatenate([prompt_ids, np.asarray(out.tokens)], axis=1)
    mask = np.concatenate([prompt_mask, np.asarray(out.mask)], axis=1)
    logits = _logits(*nnx.split(model), ids, mask)
    width = prompt_ids.shape[1]
    # Position width - 1 + i predicts generated token i.
    return np.asarray(jax.nn.log_softmax(logits[:, width - 1 : width - 1 + NEW], axis=-1))


def test_decode_step_distributions_equal_full_forward(tiny_model, padded_prompts):
    """Every step's full distribution (top-V log-probs) equals the cache-free forward's."""
    ids, mask = padded_prompts
    out = generate(
        tiny_model, ids, mask, key=jax.random.key(1), max_new_tokens=NEW, eos_ids=(),
        num_topk_logprobs=TINY_VOCAB,
    )
    assert out.tokens.shape == out.mask.shape == (4, NEW)
    assert out.topk_ids.shape == out.topk_logprobs.shape == (4, NEW, TINY_VOCAB)
    np.testing.assert_array_equal(out.lengths, NEW)

    reference = full_forward_log_probs(tiny_model, ids, mask, out)
    topk_ids, topk_logprobs = np.asarray(out.topk_ids), np.asarray(out.topk_logprobs)
    decoded = np.zeros_like(reference)
    np.put_along_axis(decoded, topk_ids, topk_logprobs, axis=-1)
    np.testing.assert_allclose(decoded, reference, atol=2e-5, rtol=0)
    # Top-k log-probs come sorted, and ``logprobs`` is the sampled token's entry.
    assert np.all(np.diff(topk_logprobs, axis=-1) <= 0)
    sampled = np.take_along_axis(reference, np.asarray(out.tokens)[..., None], -1)[..., 0]
    np.testing.assert_allclose(out.logprobs, sampled, atol=2e-5, rtol=0)
    # Temperature 1 without filters samples from the model itself.
    np.testing.assert_allclose(out.sampling_logprobs, out.logprobs, atol=2e-5, rtol=0)


def test_greedy_equals_argmax_of_full_forward(tiny_model, padded_prompts):
    ids, mask = padded_prompts
    out = generate(tiny_model, ids, mask, max_new_tokens=NEW, temperature=0.0, eos_ids=())
    reference = full_forward_log_probs(tiny_model, ids, mask, out)
    np.testing.assert_array_equal(out.tokens, reference.argmax(-1))
    np.testing.assert_array_equal(out.sampling_logprobs, 0.0)


def test_padding_does_not_change_a_row(tiny_model, padded_prompts):
    """A row generates the same tokens left-padded, right-padded and with no padding."""
    ids, mask = padded_prompts
    batch = generate(tiny_model, ids, mask, max_new_tokens=NEW, temperature=0.0, eos_ids=())
    prompt = ids[1, mask[1]]  # 4 real tokens, left-padded in the batch
    moved_ids = np.zeros((4, 16), np.int32)
    moved_mask = np.zeros((4, 16), bool)
    moved_ids[0, :4], moved_mask[0, :4] = prompt, True  # right padding
    moved_ids[1, 3:7], moved_mask[1, 3:7] = prompt, True  # padding on both sides
    moved_ids[2:, 12:], moved_mask[2:, 12:] = prompt, True  # left padding only
    moved = generate(
        tiny_model, moved_ids, moved_mask, max_new_tokens=NEW, temperature=0.0, eos_ids=()
    )
    for row in range(4):
        np.testing.assert_array_equal(moved.tokens[row], batch.tokens[1])
        np.testing.assert_allclose(moved.logprobs[row], batch.logprobs[1], atol=1e-5)


def test_eos_ends_rows_independently(tiny_model, padded_prompts):
    ids, mask = padded_prompts
    free = generate(tiny_model, ids, mask, max_new_tokens=NEW, temperature=0.0, eos_ids=())
    free_tokens = np.asarray(free.tokens)
    # Two EOS ids taken from the free-running output, so that rows stop at
    # different steps; a row without either runs to max_new_tokens.
    eos = (int(free_tokens[0, 2]), int(free_tokens[2, 5]))
    out = generate(tiny_model, ids, mask, max_new_tokens=NEW, temperature=0.0, eos_ids=eos, pad_id=31)
    tokens, out_mask, lengths = np.asarray(out.tokens), np.asarray(out.mask), np.asarray(out.lengths)
    for row in range(4):
        hits = np.flatnonzero(np.isin(free_tokens[row], eos))
        length = NEW if hits.size == 0 else hits[0] + 1
        assert lengths[row] == length
        np.testing.assert_array_equal(out_mask[row], np.arange(NEW) < length)
        np.testing.assert_array_equal(tokens[row, :length], free_tokens[row, :length])
        np.testing.assert_array_equal(tokens[row, length:], 31)
        np.testing.assert_array_equal(np.asarray(out.logprobs)[row, length:], 0.0)
    assert len(set(lengths.tolist())) > 1, "the test needs rows of different lengths"
    assert lengths[0] <= 3


def test_batch_stops_when_every_row_has_ended(tiny_model, padded_prompts):
    ids, mask = padded_prompts
    free = generate(tiny_model, ids, mask, max_new_tokens=NEW, temperature=0.0, eos_ids=())
    first_tokens = sorted(set(np.asarray(free.tokens)[:, 0].tolist()))
    out = generate(tiny_model, ids, mask, max_new_tokens=NEW, temperature=0.0, eos_ids=first_tokens)
    np.testing.assert_array_equal(out.lengths, 1)
    np.testing.assert_array_equal(out.mask[:, 1:], False)
    np.testing.assert_array_equal(out.tokens[:, 0], free.tokens[:, 0])


def test_eos_ids_default_to_the_model_config():
    """Without a tokenizer EOS or generation_config.json, the model config's ids stop a response."""

    class Config:
        eos_token_id = (5, 7)

    class Tokenizer:
        eos_token_id = pad_token_id = None

    assert stop_tokens(Tokenizer(), None, Config()).eos_ids == (5, 7)
    assert token_ids(3) == (3,) and token_ids(np.int64(3)) == (3,)
    assert token_ids(()) == () and token_ids(None) == ()
    Config.eos_token_id = 9
    assert stop_tokens(Tokenizer(), None, Config()).eos_ids == (9,)
    np.testing.assert_array_equal(padded_eos_array((4, 9)), [4, 9] + [-1] * 6)
    assert padded_eos_array(range(9)).shape == (16,)


def test_generate_eos_ids_none_means_the_model_configs(tiny_model, padded_prompts, monkeypatch):
    """``generate(eos_ids=None)`` stops at the config's ids; an int or ``()`` pass as given.

    ``decode`` is stubbed: nothing compiles.
    """
    seen = []
    monkeypatch.setattr(generation, "decode", lambda *args, **kwargs: seen.append(args[5].eos_ids_E))
    monkeypatch.setattr(tiny_model, "config", dataclasses.replace(tiny_model.config, eos_token_id=(5, 7)))
    ids, mask = padded_prompts
    for eos_ids in (None, 3, ()):
        generate(tiny_model, ids, mask, max_new_tokens=NEW, temperature=0.0, eos_ids=eos_ids)
    np.testing.assert_array_equal(seen[0][:3], [5, 7, -1])
    np.testing.assert_array_equal(seen[1][:2], [3, -1])
    np.testing.assert_array_equal(seen[2], -1)


def test_key_makes_sampling_deterministic(tiny_model, padded_prompts):
    ids, mask = padded_prompts

    def run(seed, **kwargs):
        out = generate(tiny_model, ids, mask, key=jax.random.key(seed), max_new_tokens=NEW, eos_ids=(), **kwargs)
        return np.asarray(out.tokens)

    np.testing.assert_array_equal(run(0), run(0))
    assert (run(0) != run(1)).any()
    with pytest.raises(ValueError, match="PRNG key"):
        generate(tiny_model, ids, mask, max_new_tokens=NEW)


def test_filters_never_emit_excluded_tokens(tiny_model, padded_prompts):
    """Every sampled token is allowed by top-k, top-p and min-p (applied in that order).

    The per-filter properties are tested on many random rows in
    ``test_step.py``; this runs them all inside the decode loop.
    """
    settings = dict(temperature=0.7, top_k=6, top_p=0.8, min_p=0.05)
    ids, mask = padded_prompts
    ids, mask = np.tile(ids, (8, 1)), np.tile(mask, (8, 1))  # 32 rows x 8 steps
    out = generate(
        tiny_model, ids, mask, key=jax.random.key(3), max_new_tokens=NEW, eos_ids=(),
        num_topk_logprobs=TINY_VOCAB, **settings,
    )
    tokens = np.asarray(out.tokens)
    logprobs = np.zeros((*tokens.shape, TINY_VOCAB), np.float32)
    np.put_along_axis(logprobs, np.asarray(out.topk_ids), np.asarray(out.topk_logprobs), axis=-1)
    # The filtered distribution, built independently in NumPy (HF order).
    logits = logprobs / settings.get("temperature", 1.0)
    allowed = np.ones_like(logits, bool)
    if settings.get("top_k"):
        kth = np.sort(logits, axis=-1)[..., -settings["top_k"]][..., None]
        allowed &= logits >= kth
    if settings.get("top_p"):
        probs = np.where(allowed, np.exp(logits - logits.max(-1, keepdims=True)), 0.0)
        probs /= probs.sum(-1, keepdims=True)
        order = np.argsort(-probs, axis=-1)
        sorted_probs = np.take_along_axis(probs, order, -1)
        keep_sorted = (np.cumsum(sorted_probs, -1) - sorted_probs) < settings["top_p"] + 1e-5
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        allowed &= keep
    if settings.get("min_p"):
        allowed &= logits >= logits.max(-1, keepdims=True) + np.log(settings["min_p"]) - 1e-5
    chosen_allowed = np.take_along_axis(allowed, tokens[..., None], -1)[..., 0]
    assert chosen_allowed.all()
    assert (allowed.sum(-1) < TINY_VOCAB).all(), "the filter should exclude something"
    # The sampling log-prob is the token's log-prob under the filtered distribution.
    filtered = np.where(allowed, logits, -np.inf)
    shifted = filtered - filtered.max(-1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(-1, keepdims=True))
    expected = np.take_along_axis(shifted - log_norm, tokens[..., None], -1)[..., 0]
    np.testing.assert_allclose(out.sampling_logprobs, expected, atol=1e-4)


def test_first_token_frequencies_match_the_model_distribution(tiny_model):
    """Chi-square test of 4000 first tokens against the softmax (fixed seed)."""
    rows = 4000
    prompt = np.asarray([[3, 14, 15, 9, 2, 6]], np.int32)
    out = generate(
        tiny_model, np.repeat(prompt, rows, axis=0), None, key=jax.random.key(7),
        max_new_tokens=1, eos_ids=(),
    )
    logits = _logits(*nnx.split(tiny_model), prompt, np.ones_like(prompt, bool))
    probs = np.asarray(jax.nn.softmax(logits[0, -1]))
    counts = np.bincount(np.asarray(out.tokens)[:, 0], minlength=TINY_VOCAB)
    expected = rows * probs
    # Pool the rare tokens (expected count < 5) into one bin, as chi-square needs.
    rare = expected < 5
    observed_bins = np.append(counts[~rare], counts[rare].sum())
    expected_bins = np.append(expected[~rare], expected[rare].sum())
    chi2 = np.sum((observed_bins - expected_bins) ** 2 / np.maximum(expected_bins, 1e-9))
    dof = len(observed_bins) - 1
    # A bound above the 0.999 quantile of chi-square with ``dof`` degrees of freedom.
    assert chi2 < dof + 4.5 * np.sqrt(2 * dof) + 10, (chi2, dof)
    assert dof >= 8, "the distribution should spread over many tokens"
    # The same draws are far from a uniform distribution: the test has power.
    uniform = rows / TINY_VOCAB
    assert np.sum((counts - uniform) ** 2 / uniform) > 10 * chi2


def test_same_bucket_and_new_weights_do_not_recompile(tiny_model, padded_prompts):
    """After the first call, other prompts of the bucket, settings and weights reuse the program."""
    ids, mask = padded_prompts
    kwargs = dict(max_new_tokens=NEW, eos_ids=(2,))
    generate(tiny_model, ids, mask, key=jax.random.key(0), temperature=0.8, **kwargs)
    graphdef, state = nnx.split(tiny_model)
    perturbed = nnx.merge(graphdef, jax.tree.map(lambda x: x * 1.01, state))
    rng = np.random.default_rng(1)
    with count_backend_compiles() as compiles:
        for step, model in enumerate([tiny_model, perturbed, tiny_model]):
            width = 11 + 2 * step  # 11, 13, 15 tokens: all in the 16 bucket
            new_ids = rng.integers(1, TINY_VOCAB, (4, width)).astype(np.int32)
            out = generate(
                model, new_ids, np.ones_like(new_ids, bool), key=jax.random.key(step),
                temperature=0.5 + 0.2 * step, **kwargs,
            )
            jax.block_until_ready(out)
    assert compiles[0] == 0


def test_prompt_width_beyond_a_bucket_compiles_a_new_program(tiny_model, padded_prompts):
    """A 17-token prompt needs the 32 bucket: a new program (the counter works)."""
    ids, mask = padded_prompts
    wide_ids = np.concatenate([np.ones((4, 8), np.int32), ids], axis=1)
    wide_mask = np.concatenate([np.ones((4, 8), bool), mask], axis=1)
    with count_backend_compiles() as compiles:
        out = generate(
            tiny_model, jnp.asarray(wide_ids), jnp.asarray(wide_mask), max_new_tokens=NEW,
            temperature=0.0, eos_ids=(), cache_dtype="bfloat16",
        )
        jax.block_until_ready(out)
    assert compiles[0] >= 1
    assert out.tokens.shape == (4, NEW)


def test_argument_validation(tiny_model, padded_prompts):
    ids, mask = padded_prompts
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(tiny_model, ids, mask, max_new_tokens=0, temperature=0.0)
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        generate(tiny_model, ids[0], None, max_new_tokens=2, temperature=0.0)
    with pytest.raises(ValueError, match="num_topk_logprobs"):
        generate(tiny_model, ids, mask, max_new_tokens=2, temperature=0.0, num_topk_logprobs=99)


def test_scanned_and_unstacked_layers_agree(tiny_model, padded_prompts):
    """The decode loop over per-layer weight copies equals the scan over stacked weights."""
    ids, mask = padded_prompts
    kwargs = dict(max_new_tokens=NEW, temperature=0.0, eos_ids=())
    unstacked = generate(tiny_model, ids, mask, unstack_layers=True, **kwargs)
    scanned = generate(tiny_model, ids, mask, unstack_layers=False, **kwargs)
    np.testing.assert_array_equal(unstacked.tokens, scanned.tokens)
    np.testing.assert_allclose(unstacked.logprobs, scanned.logprobs, atol=1e-5)
