"""Prefill + decode through the KV cache equals the full forward pass."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jdistill.models as jm

PROMPT_LEN = 8
NEW_TOKENS = 4  # The padded batch has 12 tokens: 8 prompt + 4 decoded.


@pytest.mark.parametrize("case", ["llama_gqa_bias", "mistral_sliding_window", "gpt2", "gemma2", "gemma3"])
def test_decode_steps_equal_full_forward(case, hf_checkpoint, padded_batch, forward):
    directory, _ = hf_checkpoint(case)
    model = jm.load_pretrained(directory)
    ids, mask = padded_batch  # Left-padded prompts; one row's tail is padding.
    full = np.asarray(forward(model, ids, mask).logits)
    real = mask.astype(bool)

    cache = model.init_cache(batch_size=ids.shape[0], max_len=ids.shape[1] + 2)
    out = forward(model, ids[:, :PROMPT_LEN], mask[:, :PROMPT_LEN], cache=cache)
    prompt_real = real[:, :PROMPT_LEN]
    np.testing.assert_allclose(
        np.asarray(out.logits)[prompt_real], full[:, :PROMPT_LEN][prompt_real], atol=1e-5, rtol=0
    )
    cache = out.cache
    for step in range(PROMPT_LEN, PROMPT_LEN + NEW_TOKENS):
        out = forward(model, ids[:, step : step + 1], mask[:, step : step + 1], cache=cache)
        cache = out.cache
        rows = real[:, step]
        np.testing.assert_allclose(
            np.asarray(out.logits)[rows, 0], full[rows, step], atol=1e-5, rtol=0
        )
    assert int(cache.index) == PROMPT_LEN + NEW_TOKENS
    np.testing.assert_array_equal(cache.lengths, mask.sum(-1))
    np.testing.assert_array_equal(np.asarray(cache.valid)[:, : ids.shape[1]], real)


def test_explicit_positions_match_derived_ones(hf_checkpoint, padded_batch, forward):
    directory, _ = hf_checkpoint("llama_gqa_bias")
    model = jm.load_pretrained(directory)
    ids, mask = padded_batch
    prompt, prompt_mask = ids[:, :PROMPT_LEN], mask[:, :PROMPT_LEN]
    next_ids = ids[:, PROMPT_LEN : PROMPT_LEN + 1]
    cache = model.init_cache(ids.shape[0], ids.shape[1] + 2)
    prefill = forward(model, prompt, prompt_mask, cache=cache)
    # The next real token of each row sits at position "real tokens so far".
    next_positions = prompt_mask.sum(-1, keepdims=True)
    ones = np.ones_like(next_ids)
    explicit = forward(model, next_ids, ones, positions=next_positions, cache=prefill.cache)
    derived = forward(model, next_ids, ones, cache=prefill.cache)
    np.testing.assert_allclose(explicit.logits, derived.logits, atol=1e-6, rtol=0)


def test_greedy_decode_in_a_jitted_loop(hf_checkpoint, padded_batch, forward):
    """The cache is a valid ``lax`` loop carry (fixed shapes and dtypes)."""
    directory, _ = hf_checkpoint("llama_gqa_bias")
    model = jm.load_pretrained(directory)
    ids, mask = padded_batch
    prompt, prompt_mask = ids[:, :PROMPT_LEN], mask[:, :PROMPT_LEN]
    graphdef, state = nnx.split(model)

    @functools.partial(jax.jit, static_argnums=(0,))
    def generate(graphdef, state, prompt, prompt_mask):
        model = nnx.merge(graphdef, state)
        cache = model.init_cache(prompt.shape[0], PROMPT_LEN + NEW_TOKENS)
        out = model(prompt, attention_mask=prompt_mask, cache=cache)
        tokens = jnp.zeros((prompt.shape[0], NEW_TOKENS), jnp.int32)
        tokens = tokens.at[:, 0].set(jnp.argmax(out.logits[:, -1], axis=-1))

        def step(i, carry):
            cache, tokens = carry
            previous = jax.lax.dynamic_slice_in_dim(tokens, i, 1, axis=1)
            out = model(previous, cache=cache)
            new = jnp.argmax(out.logits, axis=-1).astype(tokens.dtype)
            return out.cache, jax.lax.dynamic_update_slice_in_dim(tokens, new, i + 1, axis=1)

        _, tokens = jax.lax.fori_loop(0, NEW_TOKENS - 1, step, (out.cache, tokens))
        return tokens

    tokens = np.asarray(generate(graphdef, state, prompt, prompt_mask))
    # Teacher-forcing the generated tokens through a full forward pass must
    # predict each of them greedily.
    full_ids = np.concatenate([prompt, tokens], axis=1)
    full_mask = np.concatenate([prompt_mask, np.ones_like(tokens)], axis=1)
    logits = np.asarray(forward(model, full_ids, full_mask).logits)
    predicted = logits[:, PROMPT_LEN - 1 : -1].argmax(-1)
    np.testing.assert_array_equal(predicted, tokens)
