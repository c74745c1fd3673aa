"""Gemma 2 / Gemma 3 specifics: soft-capping in every attention implementation, config reading
against transformers' own interpretation, the features being applied, sharding, fused losses.

Logit parity with transformers (both padding sides, every layer's hidden states and attention
probabilities), safetensors round trips, KV-cache decoding and greedy sampling run for the
``gemma2``/``gemma3`` cases of ``hf_cases.py`` in the shared test modules.
"""

import functools
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from flax import nnx
from tests.models.test_attention_impl import SCALE, make_case, numpy_attention, run_impl
from tests.models.test_sharding import _assert_placed_by_rules, _sharded_logits

import jdistill.models as jm
from jdistill import losses
from jdistill.models import attention_impl as ai

CAP = 1.5


@pytest.mark.parametrize("window", [None, 6])
@pytest.mark.parametrize(
    "impl,kw", [("reference", {}), ("xla_chunked", {"block_size": 16}), ("pallas_interpret", {})],
    ids=["reference", "xla_chunked", "pallas_interpret"],
)
def test_soft_capped_attention_matches_numpy(impl, kw, window):
    t = 40
    q, k, v, valid, segments = make_case(t, seed=3)
    q, k = 2 * q, 2 * k  # large scores: the cap bites
    seg = ai.segment_ids_from_mask(jnp.asarray(valid), jnp.asarray(segments))
    want, _ = numpy_attention(q, k, v, valid, valid, segments, segments, 0, window, softcap=CAP)
    uncapped, _ = numpy_attention(q, k, v, valid, valid, segments, segments, 0, window)
    assert np.abs(want - uncapped).max() > 0.1
    run = functools.partial(run_impl, impl, window=window, softcap=CAP, **kw)
    np.testing.assert_allclose(jax.jit(run)(q, k, v, seg), want, atol=2e-6, rtol=1e-5)

    cot = np.random.default_rng(1).normal(size=want.shape).astype(np.float32)

    def grads(fn):
        return jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v, seg) * cot), argnums=(0, 1, 2)))(q, k, v)

    # The reference is plain autodiff of the dense formula (its values match NumPy above).
    reference = functools.partial(run_impl, "reference", window=window, softcap=CAP)
    for got, ref in zip(grads(run), grads(reference), strict=True):
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-4)


def test_soft_cap_with_a_cache_offset_matches_numpy():
    q, k, v, valid, _ = make_case(24, seed=4)
    q_new, offset = 2 * q[:, :, 16:20], 16  # 4 queries at slots 16..19 over 24 key slots
    seg_q = ai.segment_ids_from_mask(jnp.asarray(valid[:, 16:20]))
    seg_k = ai.segment_ids_from_mask(jnp.asarray(valid))
    want, _ = numpy_attention(
        q_new, 2 * k, v, valid[:, 16:20], valid, np.zeros_like(valid[:, 16:20]), np.zeros_like(valid), offset, 5,
        softcap=CAP,
    )
    for impl in ("reference", "xla_chunked"):
        got, _ = ai.attend(q_new, 2 * k, v, scale=SCALE, q_segment_ids_BxT=seg_q, kv_segment_ids_BxS=seg_k,
                           q_offset=jnp.int32(offset), window=5, impl=impl, softcap=CAP, block_size=8)
        # Rows of padding queries are not compared here (their key set differs by construction).
        rows = valid[:, 16:20]
        np.testing.assert_allclose(np.asarray(got).transpose(0, 2, 1, 3)[rows],
                                   want.transpose(0, 2, 1, 3)[rows], atol=2e-6, rtol=1e-5)


def test_cudnn_refuses_the_soft_cap_and_auto_skips_it():
    q, k, v, _, _ = make_case(8)
    with pytest.raises(ai.AttentionImplementationError, match="does not support attention logit soft-capping"):
        ai.attend(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16), v.astype(jnp.bfloat16), scale=SCALE,
                  impl="cudnn", softcap=50.0)
    with pytest.raises(ai.AttentionImplementationError, match="softcap must be positive"):
        ai.attend(q, k, v, scale=SCALE, impl="reference", softcap=0.0)
    assert ai.resolve_implementation("auto", dtype=jnp.bfloat16, head_dim=128, backend="gpu") == "cudnn"
    assert ai.resolve_implementation("auto", dtype=jnp.bfloat16, head_dim=128, backend="gpu",
                                     softcap=50.0) == "xla_chunked"
    assert ai.resolve_implementation("auto", dtype=jnp.bfloat16, backend="tpu", softcap=50.0) == "pallas"


# ----------------------------------------------------------------------------
# config.json: jdistill reads what transformers reads.

_SMALL = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=1)


@pytest.mark.parametrize(
    "model_type,legacy",
    [
        # Older Gemma 2 configs: no layer_types (alternating), top-level rope_theta, soft-caps
        # and head_dim left to the class defaults.
        ("gemma2", dict(num_hidden_layers=5, rope_theta=20000.0, sliding_window=8, query_pre_attn_scalar=144)),
        # Older Gemma 3 configs: sliding_window_pattern, rope_theta + rope_scaling (global layers),
        # rope_local_base_freq (local layers).
        ("gemma3_text", dict(num_hidden_layers=13, head_dim=32, rope_theta=1_000_000.0,
                             rope_local_base_freq=10_000.0, rope_scaling={"rope_type": "linear", "factor": 8.0},
                             sliding_window_pattern=6, sliding_window=512, final_logit_softcapping=30.0)),
        ("gemma3_text", dict(num_hidden_layers=4, sliding_window_pattern=2, head_dim=16)),  # all defaults
    ],
)
def test_config_reading_agrees_with_transformers(model_type, legacy, tmp_path):
    legacy = {**_SMALL, **legacy}
    hf_class = transformers.Gemma2Config if model_type == "gemma2" else transformers.Gemma3TextConfig
    # transformers' interpretation of the legacy fields, in its own (new) format.
    canonical = hf_class(**legacy).to_dict()
    ours = jm.FAMILIES[model_type].config_from_hf({"model_type": model_type, **legacy})
    assert ours == jm.FAMILIES[model_type].config_from_hf(canonical)

    windowed = [t == "sliding_attention" for t in canonical["layer_types"]]
    assert list(ours.layer_uses_window()) == windowed and 0 < sum(windowed) < len(windowed)
    assert ours.sliding_window == canonical["sliding_window"]
    assert ours.head_dim == canonical["head_dim"]
    assert ours.attention_scale == canonical["query_pre_attn_scalar"] ** -0.5
    assert ours.final_logit_softcap == canonical["final_logit_softcapping"]
    rope = canonical["rope_parameters"]
    if model_type == "gemma2":
        assert ours.attn_logit_softcap == canonical["attn_logit_softcapping"] == 50.0
        assert ours.rope_theta == rope["rope_theta"] and ours.local_rope_theta is None
    else:
        assert ours.rope_theta == rope["full_attention"]["rope_theta"]
        assert ours.local_rope_theta == rope["sliding_attention"]["rope_theta"]
        factor = rope["full_attention"].get("factor")
        assert (ours.rope_scaling is None) == (factor is None)
        assert ours.local_rope_scaling is None
        if model_type == "gemma3_text" and legacy["num_hidden_layers"] == 13:
            assert ours.layer_uses_window() == (*([True] * 5), False, *([True] * 5), False, True)  # 5:1

    # And back: transformers reads the config jdistill writes as the same architecture.
    written = hf_class(**{k: v for k, v in jm.FAMILIES[model_type].config_to_hf(ours).items()})
    assert written.layer_types == canonical["layer_types"]
    assert written.rope_parameters == canonical["rope_parameters"]
    assert written.query_pre_attn_scalar == canonical["query_pre_attn_scalar"]


def test_unsupported_gemma_settings_are_refused():
    gemma2 = jm.FAMILIES["gemma2"].config_from_hf({"model_type": "gemma2", "num_hidden_layers": 2, **_SMALL})
    with pytest.raises(jm.ModelConfigError, match="use_bidirectional_attention"):
        jm.FAMILIES["gemma3_text"].config_from_hf(
            {"model_type": "gemma3_text", "num_hidden_layers": 2, "use_bidirectional_attention": True, **_SMALL}
        )
    with pytest.raises(jm.ModelConfigError, match="qk_norm"):
        jm.FAMILIES["gemma2"].config_to_hf(gemma2.replace(qk_norm=True))
    # transformers' Gemma 3 does not soft-cap attention: such a model cannot be saved as one.
    with pytest.raises(jm.ModelConfigError, match="attn_logit_softcap"):
        jm.FAMILIES["gemma3_text"].config_to_hf(gemma2.replace(model_type="gemma3_text", qk_norm=True))
    with pytest.raises(jm.ModelConfigError, match="norm_unit_offset"):
        jm.FAMILIES["gemma2"].config_to_hf(gemma2.replace(norm_unit_offset=False))
    with pytest.raises(jm.ModelConfigError, match="norm_unit_offset needs norm_type='rms'"):
        gemma2.replace(norm_type="layer")
    with pytest.raises(jm.ModelConfigError, match="local_rope_scaling needs local_rope_theta"):
        gemma2.replace(local_rope_scaling=jm.RopeScaling("linear", 2.0))


# ----------------------------------------------------------------------------
# Every Gemma feature changes the logits (so the parity tests see each one).


def _edited_logits(directory, tmp_path, forward, ids, mask, **edits):
    shutil.copytree(directory, tmp_path, dirs_exist_ok=True)
    hf = json.loads((tmp_path / "config.json").read_text())
    hf.update(edits)
    (tmp_path / "config.json").write_text(json.dumps(hf))
    return np.asarray(forward(jm.load_pretrained(tmp_path), ids, mask).logits)


@pytest.mark.parametrize(
    "case,edits",
    [
        ("gemma2", {"attn_logit_softcapping": None}),
        ("gemma2", {"final_logit_softcapping": None}),
        ("gemma2", {"query_pre_attn_scalar": 24}),
        ("gemma2", {"layer_types": ["full_attention"] * 4}),
        ("gemma3", {"rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                                        "sliding_attention": {"rope_type": "linear", "factor": 8.0,
                                                              "rope_theta": 1e6}}}),
    ],
)
def test_each_feature_matters(case, edits, hf_checkpoint, padded_batch, torch_forward, forward, tmp_path):
    directory, hf_model = hf_checkpoint(case)
    ids, mask = padded_batch
    expected = torch_forward(hf_model, ids, mask).logits.numpy()
    got = _edited_logits(directory, tmp_path, forward, ids, mask, **edits)
    real = mask.astype(bool)
    assert np.abs(got[real] - expected[real]).max() > 1e-3


# ----------------------------------------------------------------------------
# Gradients, sharding and the fused losses on real Gemma models.


@pytest.mark.slow
def test_gradients_match_across_attention_implementations(hf_checkpoint, padded_batch):
    directory, _ = hf_checkpoint("gemma2")
    ids, mask = padded_batch

    def grads(impl):
        graphdef, state = nnx.split(jm.load_pretrained(directory, attention_impl=impl))

        def loss(state):
            logits = nnx.merge(graphdef, state)(ids, mask).logits
            return jnp.sum(jnp.where(mask[..., None] > 0, jax.nn.log_softmax(logits)[..., :8], 0.0))

        return jax.jit(jax.grad(loss))(state)

    for got, ref in zip(jax.tree.leaves(grads("xla_chunked")), jax.tree.leaves(grads("reference")), strict=True):
        np.testing.assert_allclose(got, ref, atol=2e-5, rtol=1e-4)


def test_sharded_logits_equal_single_device(hf_checkpoint, padded_batch, forward):
    directory, _ = hf_checkpoint("gemma3")
    ids, mask = padded_batch
    single = np.asarray(forward(jm.load_pretrained(directory), ids, mask).logits)
    mesh = jm.make_mesh(data=2, fsdp=2, tensor=2)
    model = jm.load_pretrained(directory, mesh=mesh)
    _assert_placed_by_rules(model, mesh)
    spec = model.blocks.attn_post_norm.scale[...].sharding.spec
    assert all(axis is None for axis in spec)  # norms are replicated
    np.testing.assert_allclose(np.asarray(_sharded_logits(model, mesh, ids, mask)), single, atol=1e-5, rtol=0)


def test_fused_losses_on_gemma_hidden_states_equal_the_logits_path(hf_checkpoint, padded_batch, forward):
    """Teacher Gemma 3, student Gemma 2 (one vocabulary): the fused path with the models' caps."""
    student = jm.load_pretrained(hf_checkpoint("gemma2")[0])
    teacher = jm.load_pretrained(hf_checkpoint("gemma3")[0])
    ids, mask = padded_batch
    out_s, out_t = forward(student, ids, mask), forward(teacher, ids, mask)
    caps = (student.config.final_logit_softcap, teacher.config.final_logit_softcap)
    fused = losses.fused_kd_loss(
        out_s.hidden_states, student.lm_head_weight(), out_t.hidden_states, teacher.lm_head_weight(), mask,
        chunk_size=7, logit_softcap=caps,
    )
    plain = losses.token_mean(losses.forward_kl(out_s.logits, out_t.logits), mask)
    np.testing.assert_allclose(fused, plain, rtol=1e-5, atol=1e-7)
    uncapped = losses.fused_kd_loss(
        out_s.hidden_states, student.lm_head_weight(), out_t.hidden_states, teacher.lm_head_weight(), mask,
        chunk_size=7,
    )
    assert abs(float(uncapped) - float(plain)) > 1e-4
