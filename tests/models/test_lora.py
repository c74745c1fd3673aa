"""LoRA adapters (jdistill.models.lora): forward, merge, exports against transformers and peft."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch
import transformers
from flax import nnx

import jdistill.models as jm
from jdistill.models import lora
from jdistill.models.param_paths import flatten_with_param_paths

ALL = ("blocks/attn/k_proj", "blocks/attn/o_proj", "blocks/attn/q_proj", "blocks/attn/v_proj",
       "blocks/mlp/down_proj", "blocks/mlp/gate_proj", "blocks/mlp/up_proj")


def _load(directory):
    return jm.load_pretrained(directory, dtype="float32", compute_dtype="float32")


def _randomise_b(model, seed=3, std=0.05):
    """Non-zero ``B`` everywhere (a fresh adapter has ``B = 0``)."""
    for index, layer in enumerate(lora.lora_layers(model).values()):
        shape = layer.lora.lora_b.shape
        layer.lora.lora_b[...] = std * jax.random.normal(jax.random.key(seed + index), shape)


def _torch_logits(model, ids, mask):
    with torch.no_grad():
        out = model(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long),
                    position_ids=torch.tensor(np.maximum(np.cumsum(mask, -1) - 1, 0), dtype=torch.long))
    return out.logits.numpy()


def test_fresh_adapters_leave_the_model_unchanged(hf_checkpoint, padded_batch):
    directory, _ = hf_checkpoint("qwen2_tied")
    ids, mask = padded_batch
    model = _load(directory)
    before = np.asarray(model(ids, mask).logits)
    paths = lora.apply_lora(model, lora.LoraSpec(rank=4), jax.random.key(0))
    assert sorted(paths) == list(ALL)
    np.testing.assert_array_equal(np.asarray(model(ids, mask).logits), before)
    a = model.blocks.attn.q_proj.lora.lora_a[...]
    assert a.shape == (2, 64, 4) and model.blocks.attn.q_proj.lora.lora_b.shape == (2, 4, 64)
    assert 0 < float(jnp.abs(a).max()) <= 1 / 8  # PEFT's init: uniform in ±1/sqrt(in) = ±1/8


def test_lora_linear_matches_a_float64_reference():
    layer = jm.layers.Linear(6, 5, use_bias=True, init_std=0.3, param_dtype=jnp.float32, dtype=jnp.float32,
                             rngs=nnx.Rngs(0))
    holder = nnx.Dict(layer=layer)  # apply_lora walks a module tree
    lora.apply_lora(holder, lora.LoraSpec(rank=2, alpha=6.0, targets=("layer",)), jax.random.key(1))
    layer.lora.lora_b[...] = jax.random.normal(jax.random.key(2), (2, 5))
    x = np.random.RandomState(0).randn(3, 6).astype(np.float32)
    w, b = np.float64(layer.kernel[...]), np.float64(layer.bias[...])
    a, bb = np.float64(layer.lora.lora_a[...]), np.float64(layer.lora.lora_b[...])
    expected = x @ w + b + (6.0 / 2) * (x @ a @ bb)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-5)


def test_dropout_applies_only_with_a_key(hf_checkpoint, padded_batch):
    directory, _ = hf_checkpoint("llama_gqa_bias")
    ids, mask = padded_batch
    model = _load(directory)
    lora.apply_lora(model, lora.LoraSpec(rank=4, dropout=0.5), jax.random.key(0))
    _randomise_b(model, std=0.3)
    graphdef, adapters, base = lora.split(model)
    clean = np.asarray(lora.merge(graphdef, adapters, base)(ids, mask).logits)
    np.testing.assert_array_equal(np.asarray(model(ids, mask).logits), clean)

    def dropped(key):
        dropped_model = lora.merge(graphdef, adapters, base)
        lora.set_dropout_keys(dropped_model, key)
        return np.asarray(dropped_model(ids, mask).logits)

    first, again, other = dropped(jax.random.key(1)), dropped(jax.random.key(1)), dropped(jax.random.key(2))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - clean).max() > 1e-3 and np.abs(first - other).max() > 1e-3


def test_split_separates_adapters_from_the_base(hf_checkpoint):
    directory, _ = hf_checkpoint("qwen2_tied")
    model = _load(directory)
    lora.apply_lora(model, lora.LoraSpec(rank=4, targets=("q_proj", "v_proj")), jax.random.key(0))
    _, adapters, base = lora.split(model)
    assert sorted(flatten_with_param_paths(adapters)) == [
        "blocks/attn/q_proj/lora/lora_a", "blocks/attn/q_proj/lora/lora_b",
        "blocks/attn/v_proj/lora/lora_a", "blocks/attn/v_proj/lora/lora_b"]
    assert not any("lora" in path for path in flatten_with_param_paths(base))
    # 2 layers x (64x4 + 4x64) for q; v's output is the 2 kv heads x 16 = 32.
    assert sum(x.size for x in jax.tree.leaves(adapters)) == 2 * (64 * 4 + 4 * 64) + 2 * (64 * 4 + 4 * 32)


def test_sharding_rules_cover_adapters(hf_checkpoint):
    directory, _ = hf_checkpoint("qwen2_tied")
    model = _load(directory)
    lora.apply_lora(model, lora.LoraSpec(rank=4), jax.random.key(0))
    mesh = jm.make_mesh(data=2, fsdp=2, tensor=2)
    shardings = flatten_with_param_paths(jm.model_shardings(model, mesh))
    assert all(axis is None for axis in shardings["blocks/attn/q_proj/lora/lora_a"].spec)  # replicated
    assert any(axis is not None for axis in shardings["blocks/attn/q_proj/kernel"].spec)


@pytest.mark.parametrize("case", ["qwen2_tied", "llama_gqa_bias"])
def test_merged_and_peft_exports_match_transformers(hf_checkpoint, padded_batch, tmp_path, case):
    """merged export (transformers) == jdistill LoRA model == peft adapter on the base (transformers)."""
    directory, _ = hf_checkpoint(case)
    ids, mask = padded_batch
    model = _load(directory)
    lora.apply_lora(model, lora.LoraSpec(rank=4, alpha=8.0), jax.random.key(0))
    _randomise_b(model)
    ours = np.asarray(model(ids, mask).logits)
    base_logits = np.asarray(_load(directory)(ids, mask).logits)
    assert np.abs(ours - base_logits).max() > 1e-2  # the adapters matter

    merged = lora.merged_model(model)
    assert not lora.has_lora(merged) and lora.has_lora(model)  # the original keeps its adapters
    np.testing.assert_allclose(np.asarray(merged(ids, mask).logits), ours, atol=1e-5)
    jm.save_pretrained(merged, tmp_path / "merged")
    hf_merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged", attn_implementation="eager")
    valid = mask.astype(bool)
    np.testing.assert_allclose(_torch_logits(hf_merged.eval(), ids, mask)[valid], ours[valid], atol=1e-4)

    lora.save_peft_adapter(model, tmp_path / "adapter", base_model_name_or_path=str(directory))
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8.0 and len(config["target_modules"]) == 7 * 2
    base = transformers.AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager")
    adapted = peft.PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    np.testing.assert_allclose(_torch_logits(adapted, ids, mask)[valid], ours[valid], atol=1e-4)


def test_peft_export_refuses_fused_qkv_layers(hf_checkpoint, tmp_path):
    directory, _ = hf_checkpoint("gpt2")
    model = _load(directory)
    lora.apply_lora(model, lora.LoraSpec(rank=2, targets=("q_proj",)), jax.random.key(0))
    with pytest.raises(lora.LoraError, match="export the merged model instead"):
        lora.save_peft_adapter(model, tmp_path / "adapter")


def test_low_precision_base_merges_in_float32(hf_checkpoint, padded_batch):
    """QLoRA-style: a bfloat16 base with float32 adapters; the merge sums in float32."""
    directory, _ = hf_checkpoint("qwen2_tied")
    model = jm.load_pretrained(directory, dtype="bfloat16", compute_dtype="float32")
    lora.apply_lora(model, lora.LoraSpec(rank=4, dtype="float32"), jax.random.key(0))
    _randomise_b(model)
    assert model.blocks.attn.q_proj.kernel[...].dtype == jnp.bfloat16
    assert model.blocks.attn.q_proj.lora.lora_a[...].dtype == jnp.float32
    layer = model.blocks.attn.q_proj
    merged = lora.merged_model(model, dtype="float32")
    expected = np.float64(layer.kernel[...].astype(jnp.float32)) + (16.0 / 4) * np.einsum(
        "lir,lro->lio", np.float64(layer.lora.lora_a[...]), np.float64(layer.lora.lora_b[...]))
    np.testing.assert_allclose(np.asarray(merged.blocks.attn.q_proj.kernel[...]), expected, atol=1e-6)
