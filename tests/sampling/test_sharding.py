"""Generation on the 8-device CPU mesh equals single-device generation."""

import jax
import numpy as np
import pytest

import jdistill.models as jm
from jdistill.sampling import generate

NEW = 8


@pytest.fixture(scope="module")
def mesh():
    if jax.device_count() < 8:
        pytest.skip("needs the 8 virtual CPU devices of tests/conftest.py")
    return jm.make_mesh(data=2, fsdp=2, tensor=2, devices=jax.devices()[:8])


def test_sharded_generation_equals_single_device(tiny_model, padded_prompts, mesh):
    # Same shapes and settings as tests in test_decode.py: the single-device
    # programs are shared within a session.
    ids, mask = padded_prompts
    kwargs = dict(max_new_tokens=NEW, eos_ids=(5,))
    single = generate(tiny_model, ids, mask, temperature=0.0, **kwargs)
    sharded = generate(tiny_model, ids, mask, temperature=0.0, mesh=mesh, **kwargs)

    np.testing.assert_array_equal(sharded.tokens, single.tokens)
    np.testing.assert_array_equal(sharded.mask, single.mask)
    np.testing.assert_allclose(sharded.logprobs, single.logprobs, atol=1e-5)
    # The batch really is split over data x fsdp = 4 shards.
    assert sharded.tokens.sharding.shard_shape(sharded.tokens.shape)[0] == 1
    # Sampling with one key draws the same tokens on any mesh.
    sampled = [
        generate(tiny_model, ids, mask, key=jax.random.key(4), mesh=m, **kwargs).tokens
        for m in (None, mesh)
    ]
    np.testing.assert_array_equal(sampled[0], sampled[1])


def test_batch_must_divide_the_batch_shards(tiny_model, mesh):
    ids = np.ones((6, 4), np.int32)
    with pytest.raises(ValueError, match="not divisible"):
        generate(tiny_model, ids, None, max_new_tokens=2, temperature=0.0, mesh=mesh)
