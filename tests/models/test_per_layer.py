"""Per-layer parameters of a frozen decoder: the same outputs as the stacked model, and their shardings."""

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jdistill import models
from jdistill.models import per_layer


def _model(layers=3):
    config = models.DecoderConfig(model_type="llama", vocab_size=61, hidden_size=32, num_layers=layers, num_heads=4,
                                  num_kv_heads=2, head_dim=8, mlp_dim=64, init_std=0.1)
    return models.create_model(config, rngs=3)


def _inputs():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 61, (3, 10)).astype(np.int32)
    mask = np.ones((3, 10), np.int32)
    mask[0, :2] = 0  # left padding
    mask[2, 7:] = 0  # right padding
    segments = np.array([[0] * 10, [0] * 4 + [1] * 6, [0] * 3 + [1] * 7], np.int32)
    return ids, mask, segments


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_the_per_layer_forward_equals_the_stacked_one(packed):
    model = _model()
    graphdef, state = nnx.split(model)
    ids, mask, segments = _inputs()
    extra = {"segment_ids": segments} if packed else {}
    want = model(ids, mask, **extra)
    params = jax.jit(per_layer.split)(state)
    assert len(params.blocks) == 3 and "blocks" not in params.rest

    @jax.jit
    def forward(params):
        split_model, blocks = per_layer.merge(graphdef, params)
        out = split_model(ids, mask, block_states=blocks, **extra)
        return out.logits, out.hidden_states

    logits, hidden = forward(params)
    np.testing.assert_allclose(logits, want.logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hidden, want.hidden_states, rtol=1e-5, atol=1e-6)
    # Layer 1's weights are the stacked array's second slice.
    stacked_q = jax.tree.leaves(state["blocks"])[0]
    np.testing.assert_array_equal(jax.tree.leaves(params.blocks[1])[0], stacked_q[1])


def test_reading_the_stacked_blocks_of_a_per_layer_model_fails_loudly():
    graphdef, state = nnx.split(_model())
    params = per_layer.split(state)
    ids, mask, _ = _inputs()

    def forward(params):
        split_model, _ = per_layer.merge(graphdef, params)
        return split_model(ids, mask).logits  # no block_states: would read the stacked blocks

    with pytest.raises(Exception, match="ShapeDtypeStruct"):
        jax.jit(forward)(params)


def test_per_layer_shardings_drop_the_layer_axis():
    mesh = models.make_mesh(data=2, fsdp=2, tensor=2)
    model = _model(layers=2)
    graphdef, state = nnx.split(model)
    stacked = models.state_shardings(state, mesh)
    shardings = per_layer.shardings(stacked, 2)
    flat_stacked = jax.tree.leaves(stacked["blocks"])
    for layer in shardings.blocks:
        for one, full in zip(jax.tree.leaves(layer), flat_stacked, strict=True):
            assert tuple(full.spec)[0] is None  # the stacked layer axis is never sharded
            assert one.spec == P(*tuple(full.spec)[1:])
    assert any(any(axis is not None for axis in s.spec) for s in jax.tree.leaves(shardings.blocks[0]))
    params = jax.jit(per_layer.split, out_shardings=shardings)(jax.device_put(state, stacked))
    for array, sharding in zip(jax.tree.leaves(params), jax.tree.leaves(shardings), strict=True):
        assert array.sharding.is_equivalent_to(sharding, array.ndim)
