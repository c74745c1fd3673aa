"""The generation service: bucketing rule, prompt order, stop ids, keys, compiles, streaming."""

import itertools

import jax
import numpy as np
import pytest
from flax import nnx

from jdistill.sampling import (
    SamplingSettings,
    StopTokens,
    generate,
    generate_responses,
    prompt_batches,
    responses,
    stream_responses,
)
from jdistill.sampling.decode import decode
from tests.sampling.conftest import TINY_VOCAB

NEW = 8


def reference_left_pad(prompt, width, pad_id):
    """``[width]`` ids and mask, built independently of jdistill.padding."""
    ids = np.asarray([pad_id] * (width - len(prompt)) + list(prompt), np.int32)
    mask = np.asarray([False] * (width - len(prompt)) + [True] * len(prompt))
    return ids, mask


def random_prompts(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, TINY_VOCAB, n).tolist() for n in lengths]


# ----------------------------------------------------------------------------- the bucketing rule


@pytest.mark.parametrize("width,buckets,widths", [
    (None, "pow2", [16, 32, 64]),  # each batch: the pow2 bucket (>= 16) of its longest prompt
    (None, (8, 24, 48), [8, 24, 48]),  # an explicit bucket list
    (64, "pow2", [64, 64, 64]),  # a fixed width: one shape for every batch
])
def test_prompt_batches_sort_by_length_fill_the_last_and_pad_left(width, buckets, widths):
    prompts = random_prompts([5, 20, 3, 17, 40, 3, 9])
    batches = list(prompt_batches(prompts, batch_size=3, pad_id=31, width=width, buckets=buckets))
    # Sorted by length; equal lengths (prompts 2 and 5) keep their order.
    assert [b.rows for b in batches] == [(2, 5, 0), (6, 3, 1), (4,)]
    assert [b.ids_BxT.shape for b in batches] == [(3, w) for w in widths]
    for batch, w in zip(batches, widths):
        for j in range(3):
            source = batch.rows[j] if j < len(batch.rows) else batch.rows[0]  # filler: copies of the first row
            want_ids, want_mask = reference_left_pad(prompts[source], w, 31)
            np.testing.assert_array_equal(batch.ids_BxT[j], want_ids)
            np.testing.assert_array_equal(batch.mask_BxT[j], want_mask)


def test_prompt_batches_errors():
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        list(prompt_batches([[1], []], batch_size=2, pad_id=0))
    with pytest.raises(ValueError, match="more than 4"):
        list(prompt_batches([[1] * 5], batch_size=1, pad_id=0, width=4))
    with pytest.raises(ValueError, match="largest bucket"):
        list(prompt_batches([[1] * 9], batch_size=1, pad_id=0, buckets=(4, 8)))
    with pytest.raises(ValueError, match="batch_size"):
        list(prompt_batches([[1]], batch_size=0, pad_id=0))
    assert list(prompt_batches([], batch_size=2, pad_id=0)) == []


# ----------------------------------------------------------------------------- decoding


def test_responses_stop_at_any_stop_id_in_prompt_order(tiny_model):
    """Each prompt's response is its own greedy continuation cut after the first of several stop ids."""
    prompts = random_prompts([7, 2, 12, 5, 9, 1, 3], seed=1)
    ids, mask = zip(*(reference_left_pad(p, 16, 0) for p in prompts))
    free = np.asarray(generate(tiny_model, np.stack(ids), np.stack(mask), max_new_tokens=NEW, temperature=0.0,
                               eos_ids=()).tokens)
    # Two stop ids from the free-running output, so rows stop at different steps (or never).
    stop = StopTokens((int(free[0, 2]), int(free[3, 5])), pad_id=0)
    got = generate_responses(tiny_model, prompts, SamplingSettings(max_new_tokens=NEW, temperature=0.0), stop,
                             batch_size=3, width=16, num_topk_logprobs=2)
    ended = []
    for row, response in enumerate(got):
        hits = np.flatnonzero(np.isin(free[row], stop.eos_ids))
        length = NEW if hits.size == 0 else hits[0] + 1
        np.testing.assert_array_equal(response.ids, free[row, :length])
        assert response.ids.dtype == np.int32
        assert response.ended == bool(hits.size)
        np.testing.assert_array_equal(response.text_ids, free[row, : length - 1 if hits.size else length])
        assert response.topk_ids.shape == response.topk_logprobs.shape == (length, 2)
        np.testing.assert_array_equal(response.topk_ids[:, 0], response.ids)  # greedy: the top-1 id
        assert np.all(np.diff(response.topk_logprobs, axis=-1) <= 0)
        ended.append(response.ended)
    assert any(ended) and not all(ended), "the test needs rows that end and rows that run to NEW tokens"
    assert len({len(r.ids) for r in got}) > 2


def test_batch_keys_fold_the_sorted_start_or_come_from_batch_key(tiny_model):
    prompts = random_prompts([9, 2, 5, 12], seed=2)  # sorted: (1, 2), then (0, 3)
    settings = SamplingSettings(max_new_tokens=NEW, temperature=1.0)
    stop = StopTokens((5,), pad_id=0)
    key = jax.random.key(4)

    def alone(rows, batch_key):
        ids, mask = zip(*(reference_left_pad(prompts[i], 16, 0) for i in rows))
        out = generate(tiny_model, np.stack(ids), np.stack(mask), key=batch_key, max_new_tokens=NEW,
                       temperature=1.0, eos_ids=(5,), pad_id=0)
        return {i: np.asarray(out.tokens)[j, : int(out.lengths[j])] for j, i in enumerate(rows)}

    want = {**alone((1, 2), jax.random.fold_in(key, 0)), **alone((0, 3), jax.random.fold_in(key, 2))}
    got = generate_responses(tiny_model, prompts, settings, stop, batch_size=2, key=key)
    for i, response in enumerate(got):
        np.testing.assert_array_equal(response.ids, want[i])

    seen = []

    def by_first_row(rows):
        seen.append(rows)
        return jax.random.fold_in(key, 100 + rows[0])

    want = {**alone((1, 2), jax.random.fold_in(key, 101)), **alone((0, 3), jax.random.fold_in(key, 100))}
    got = generate_responses(tiny_model, prompts, settings, stop, batch_size=2, batch_key=by_first_row)
    assert seen == [(1, 2), (0, 3)]
    for i, response in enumerate(got):
        np.testing.assert_array_equal(response.ids, want[i])
    with pytest.raises(ValueError, match="key or batch_key"):
        generate_responses(tiny_model, prompts, settings, stop, batch_size=2, key=key, batch_key=by_first_row)


def test_a_fixed_width_compiles_one_program_per_model(tiny_model):
    """Prompts of 3..30 tokens (buckets 16 and 32) in many batches: one program at a fixed width."""
    settings = SamplingSettings(max_new_tokens=5, temperature=0.0)  # 5: no other test's program
    stop = StopTokens((3,), pad_id=0)
    prompts = random_prompts([3, 30, 8, 17, 25, 11, 4], seed=3)
    programs = decode._cache_size()
    generate_responses(tiny_model, prompts, settings, stop, batch_size=2, width=32)
    assert decode._cache_size() == programs + 1
    graphdef, state = nnx.split(tiny_model)
    trained = nnx.merge(graphdef, jax.tree.map(lambda x: x * 1.01, state))  # new weights, same program
    generate_responses(trained, prompts[::-1], settings, stop, batch_size=2, width=32)
    assert decode._cache_size() == programs + 1
    # Without a fixed width each batch takes its own bucket: 16 is new, 32 is the program above.
    generate_responses(tiny_model, prompts, settings, stop, batch_size=2)
    assert decode._cache_size() == programs + 2


def test_streaming_is_lazy_and_progress_counts_prompts(tiny_model, monkeypatch):
    calls = []
    real = responses.generate
    monkeypatch.setattr(responses, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    prompts = random_prompts([4, 6, 2, 9, 3], seed=4)
    settings, stop = SamplingSettings(max_new_tokens=NEW, temperature=0.0), StopTokens((3,), 0)
    stream = stream_responses(tiny_model, prompts, settings, stop, batch_size=2, width=16)
    assert calls == []
    first = next(stream)
    assert calls == [1] and first.rows == (2, 4)
    assert first.new_tokens == sum(len(r.ids) for r in first.responses)
    assert len(list(itertools.islice(stream, 1))) == 1 and len(calls) == 2

    class Bar:
        counts = []

        def update(self, n):
            self.counts.append(n)

    bar = Bar()
    generate_responses(tiny_model, prompts, settings, stop, batch_size=2, width=16, progress=bar)
    assert bar.counts == [2, 2, 1]


def test_settings_need_a_new_token():
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingSettings(max_new_tokens=0)
