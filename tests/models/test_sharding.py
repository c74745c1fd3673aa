"""Sharded parameters on the 8-device CPU mesh give the single-device logits."""

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jdistill.models as jm
from jdistill.models.param_paths import flatten_with_param_paths
from jdistill.models.sharding import BATCH_AXES

LAYOUTS = [(2, 2, 2), (1, 4, 2), (1, 2, 4)]


def _assert_placed_by_rules(model, mesh):
    expected = flatten_with_param_paths(jm.model_shardings(model, mesh))
    for path, value in flatten_with_param_paths(nnx.state(model)).items():
        assert value.sharding.is_equivalent_to(expected[path], value.ndim), path


def _sharded_logits(model, mesh, ids, mask):
    graphdef, state = nnx.split(model)
    batch = jm.batch_sharding(mesh)

    def logits(state, ids, mask):
        return nnx.merge(graphdef, state)(ids, attention_mask=mask).logits

    logits = jax.jit(
        logits,
        in_shardings=(jm.model_shardings(model, mesh), batch, batch),
        out_shardings=NamedSharding(mesh, P(BATCH_AXES, None, "tensor")),
    )
    return logits(state, jax.device_put(ids, batch), jax.device_put(mask, batch))


@pytest.mark.parametrize(
    "layout", LAYOUTS, ids=lambda sizes: "data{}_fsdp{}_tensor{}".format(*sizes)
)
def test_sharded_logits_equal_single_device(layout, hf_checkpoint, padded_batch, forward):
    directory, _ = hf_checkpoint("llama_gqa_bias")
    ids, mask = padded_batch
    single = np.asarray(forward(jm.load_pretrained(directory), ids, mask).logits)

    mesh = jm.make_mesh(*layout)
    model = jm.load_pretrained(directory, mesh=mesh)
    _assert_placed_by_rules(model, mesh)
    q_kernel = model.blocks.attn.q_proj.kernel[...]
    _, fsdp, tensor = layout
    assert q_kernel.addressable_shards[0].data.shape == (2, 64 // fsdp, 64 // tensor)

    sharded = _sharded_logits(model, mesh, ids, mask)
    assert sharded.sharding.spec == P(BATCH_AXES, None, "tensor")
    np.testing.assert_allclose(np.asarray(sharded), single, atol=1e-5, rtol=0)


def test_shard_model_and_sharded_kv_cache(hf_checkpoint, padded_batch, forward):
    directory, _ = hf_checkpoint("qwen3_qk_norm")
    ids, mask = padded_batch
    model = jm.load_pretrained(directory)
    single = np.asarray(forward(model, ids, mask).logits)

    mesh = jm.make_mesh(data=2, fsdp=2, tensor=2)
    jm.shard_model(model, mesh)
    _assert_placed_by_rules(model, mesh)

    graphdef, state = nnx.split(model)
    cache = model.init_cache(ids.shape[0], ids.shape[1])
    cache_shardings = jm.kv_cache_shardings(cache, mesh)
    cache = jax.device_put(cache, cache_shardings)
    batch = jm.batch_sharding(mesh)

    def step(state, ids, mask, cache):
        out = nnx.merge(graphdef, state)(ids, attention_mask=mask, cache=cache)
        return out.logits, out.cache

    step = jax.jit(
        step,
        in_shardings=(jm.model_shardings(model, mesh), batch, batch, cache_shardings),
        out_shardings=(NamedSharding(mesh, P(BATCH_AXES)), cache_shardings),
    )
    prefill, cache = step(state, ids[:, :8], mask[:, :8], cache)
    decoded, cache = step(state, ids[:, 8:9], mask[:, 8:9], cache)
    real = mask.astype(bool)
    np.testing.assert_allclose(
        np.asarray(prefill)[real[:, :8]], single[:, :8][real[:, :8]], atol=1e-5, rtol=0
    )
    rows = real[:, 8]
    np.testing.assert_allclose(np.asarray(decoded)[rows, 0], single[rows, 8], atol=1e-5, rtol=0)


def test_make_mesh_fills_one_axis():
    mesh = jm.make_mesh(data=2, tensor=2)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert jm.MESH_AXES == mesh.axis_names
    with pytest.raises(ValueError, match="needs"):
        jm.make_mesh(data=2, fsdp=2, tensor=1)
    with pytest.raises(ValueError, match="at most one"):
        jm.make_mesh(data=-1, fsdp=-1)


def test_partition_specs_from_rules():
    rules = jm.ShardingConfig()
    mesh = jm.make_mesh(data=1, fsdp=4, tensor=2)
    assert rules.partition_spec("blocks/attn/q_proj/kernel", (3, 64, 64), mesh) == P(
        None, "fsdp", "tensor"
    )
    assert rules.partition_spec("blocks/mlp/down_proj/kernel", (3, 96, 64)) == P(
        None, "tensor", "fsdp"
    )
    assert rules.partition_spec("final_norm/scale", (64,), mesh) == P(None)
    # GPT-2's vocabulary (50257) divides by nothing: that dimension is replicated.
    assert rules.partition_spec("embed/embedding", (50257, 768), mesh) == P(None, "fsdp")
    # Axes the mesh lacks are dropped.
    small = jax.make_mesh((8,), ("fsdp",), axis_types=(jax.sharding.AxisType.Auto,))
    assert rules.partition_spec("lm_head/kernel", (64, 128), small) == P("fsdp", None)
    with pytest.raises(ValueError, match="no sharding rule"):
        rules.partition_spec("blocks/attn/new_proj/kernel", (2, 4, 4))
