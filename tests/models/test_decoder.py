"""Decoder features that do not need a transformers reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jdistill.models as jm
from jdistill.models.config import ROPE_SCALING_TYPES
from jdistill.models.param_paths import flatten_with_param_paths
from jdistill.models.remat import REMAT_POLICIES
from jdistill.models.rope import _SCALERS

TINY = jm.DecoderConfig(
    model_type="llama",
    vocab_size=96,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    mlp_dim=64,
)


def test_accessors_untied_and_tied(hf_checkpoint, padded_batch, forward):
    ids, mask = padded_batch
    untied = jm.load_pretrained(hf_checkpoint("llama_gqa_bias")[0])
    assert untied.embedding_table().shape == (128, 64)
    assert untied.lm_head_weight().shape == (64, 128)
    assert untied.lm_head_weight() is untied.lm_head.kernel[...]

    tied = jm.load_pretrained(hf_checkpoint("qwen2_tied")[0])
    assert tied.lm_head is None
    np.testing.assert_array_equal(tied.lm_head_weight(), tied.embedding_table().T)

    out = forward(untied, ids, mask, return_logits=False)
    assert out.logits is None
    full = forward(untied, ids, mask)
    np.testing.assert_allclose(out.hidden_states, full.hidden_states)
    np.testing.assert_allclose(
        out.hidden_states @ untied.lm_head_weight(), full.logits, atol=1e-5, rtol=0
    )


def test_compute_and_logits_dtypes(hf_checkpoint, padded_batch, forward):
    ids, mask = padded_batch
    directory = hf_checkpoint("qwen3_qk_norm")[0]
    reference = np.asarray(forward(jm.load_pretrained(directory), ids, mask).logits)
    bf16 = jm.load_pretrained(directory, dtype="bfloat16")
    assert bf16.config.param_dtype == bf16.config.dtype == "bfloat16"
    out = forward(bf16, ids, mask, logits_dtype="float32")
    assert out.logits.dtype == jnp.float32
    assert out.hidden_states.dtype == jnp.bfloat16
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(out.logits)[real], reference[real], atol=0.15, rtol=0)


def test_create_model_is_seeded_and_directly_sharded():
    # rbg keys take the same code path as integer seeds but XLA:CPU compiles
    # them much faster than the default threefry.
    mesh = jm.make_mesh(data=2, fsdp=2, tensor=2)
    first = jm.create_model(TINY, rngs=jax.random.key(0, impl="rbg"), mesh=mesh)
    again = jm.create_model(TINY, rngs=jax.random.key(0, impl="rbg"), mesh=mesh)
    other = jm.create_model(TINY, rngs=jax.random.key(1, impl="rbg"), mesh=mesh)

    expected = flatten_with_param_paths(jm.model_shardings(first, mesh))
    for path, value in flatten_with_param_paths(nnx.state(first)).items():
        assert value.sharding.is_equivalent_to(expected[path], value.ndim), path
    embedding = first.embedding_table()
    assert embedding.addressable_shards[0].data.shape == (96 // 2, 32 // 2)
    assert 0.01 < float(np.std(np.asarray(embedding))) < 0.03  # init_std 0.02

    np.testing.assert_array_equal(first.embedding_table(), again.embedding_table())
    assert not np.allclose(first.embedding_table(), other.embedding_table())
    kernels = np.asarray(first.blocks.attn.q_proj.kernel[...])
    assert kernels.shape == (2, 32, 32)
    assert not np.allclose(kernels[0], kernels[1])  # Layers are initialised independently.
    np.testing.assert_array_equal(first.blocks.attn_norm.scale[...], np.ones((2, 32)))


def _with_config(model, config):
    """``model``'s parameters in a model built for ``config``."""
    abstract = nnx.eval_shape(lambda: jm.Decoder(config, rngs=nnx.Rngs(0)))
    return nnx.merge(nnx.graphdef(abstract), nnx.state(model))


def _loss_and_grads(model, ids):

    @nnx.jit
    def loss_and_grads(model, ids):
        def loss(model):
            logits = model(ids).logits
            return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - logits[..., 0])

        return nnx.value_and_grad(loss)(model)

    return loss_and_grads(model, ids)


@pytest.mark.slow
def test_full_remat_does_not_change_values_or_gradients(hf_checkpoint, padded_batch):
    source = jm.load_pretrained(hf_checkpoint("llama_gqa_bias")[0])
    ids = padded_batch[0]
    reference_loss, reference_grads = _loss_and_grads(source, ids)
    remat = _with_config(source, source.config.replace(remat="full"))
    loss, grads = _loss_and_grads(remat, ids)
    np.testing.assert_allclose(loss, reference_loss, rtol=1e-6)
    jax.tree.map(
        functools.partial(np.testing.assert_allclose, atol=1e-6, rtol=1e-5),
        grads,
        reference_grads,
    )


def _remat_policies_in_layer_scan(policy_name: str) -> list:
    """The ``jax.checkpoint`` policies applied inside the layer scan."""
    config = TINY.replace(remat=policy_name)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: jm.Decoder(config, rngs=nnx.Rngs(0))))
    ids = jax.ShapeDtypeStruct((2, 8), jnp.int32)
    jaxpr = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x).logits)(state, ids)
    (scan,) = [eqn for eqn in jaxpr.jaxpr.eqns if eqn.primitive.name == "scan"]
    body = scan.params["jaxpr"].jaxpr
    return [eqn.params["policy"] for eqn in body.eqns if eqn.primitive.name == "remat2"]


@pytest.mark.parametrize("policy_name", sorted(REMAT_POLICIES))
def test_remat_policy_wraps_each_block(policy_name):
    policies = _remat_policies_in_layer_scan(policy_name)
    expected = REMAT_POLICIES[policy_name]
    assert policies == ([] if expected is None else [expected])


def _traced_equations(config) -> int:
    graphdef, state = nnx.split(nnx.eval_shape(lambda: jm.Decoder(config, rngs=nnx.Rngs(0))))
    ids = jax.ShapeDtypeStruct((2, 8), jnp.int32)
    jaxpr = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x).logits)(state, ids)
    return len(jaxpr.jaxpr.eqns)


def test_program_size_does_not_grow_with_depth():
    shallow = _traced_equations(TINY)
    deep = _traced_equations(TINY.replace(num_layers=12))
    assert shallow == deep


def test_every_rope_scaling_type_has_an_implementation():
    assert set(_SCALERS) == set(ROPE_SCALING_TYPES)
    with pytest.raises(jm.ModelConfigError, match="llama3"):
        jm.RopeScaling("llama3", factor=8.0)
