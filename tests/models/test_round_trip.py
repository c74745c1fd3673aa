"""save_pretrained -> transformers, transformers (sharded) -> load_pretrained."""

import json

import numpy as np
import pytest
import tokenizers
import torch
import transformers
from tests.models.hf_cases import HF_CASES
from safetensors.numpy import load_file, save_file

import jdistill.models as jm

ATOL = 1e-4


def _hf_load(directory, **kwargs):
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        directory, output_loading_info=True, **kwargs
    )
    assert not info["missing_keys"], info
    assert not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    return model.eval()


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_saved_model_loads_in_transformers_with_same_logits(
    case, hf_checkpoint, padded_batch, torch_forward, forward, tmp_path
):
    directory, hf_model = hf_checkpoint(case)
    ids, mask = padded_batch
    model = jm.load_pretrained(directory)
    jm.save_pretrained(model, tmp_path)

    reloaded = _hf_load(tmp_path)
    assert type(reloaded) is type(hf_model)
    got = torch_forward(reloaded, ids, mask).logits.numpy()
    want = torch_forward(hf_model, ids, mask).logits.numpy()
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], want[real], atol=ATOL, rtol=0)
    ours = np.asarray(forward(model, ids, mask).logits)
    np.testing.assert_allclose(ours[real], got[real], atol=ATOL, rtol=0)
    assert jm.config_from_hf_dir(tmp_path) == model.config


@pytest.mark.parametrize("case", ["llama_gqa_bias", "gpt2"])
def test_loads_sharded_transformers_checkpoint(
    case, hf_checkpoint, padded_batch, torch_forward, forward, tmp_path
):
    _, hf_model = hf_checkpoint(case)
    hf_model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert not (tmp_path / "model.safetensors").exists()

    ids, mask = padded_batch
    model = jm.load_pretrained(tmp_path)
    want = torch_forward(hf_model, ids, mask).logits.numpy()
    got = np.asarray(forward(model, ids, mask).logits)
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], want[real], atol=ATOL, rtol=0)


def test_sharded_save_loads_in_transformers(hf_checkpoint, padded_batch, torch_forward, tmp_path):
    directory, hf_model = hf_checkpoint("qwen3_qk_norm")
    model = jm.load_pretrained(directory)
    jm.save_pretrained(model, tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1

    ids, mask = padded_batch
    got = torch_forward(_hf_load(tmp_path), ids, mask).logits.numpy()
    want = torch_forward(hf_model, ids, mask).logits.numpy()
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], want[real], atol=ATOL, rtol=0)

    # Saving again unsharded replaces the shards.
    jm.save_pretrained(model, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("model*")) == ["model.safetensors"]


def test_bfloat16_round_trip(hf_checkpoint, padded_batch, torch_forward, forward, tmp_path):
    directory, hf_model = hf_checkpoint("llama_gqa_bias")
    model = jm.load_pretrained(directory, dtype="bfloat16")
    assert model.embedding_table().dtype == np.dtype("bfloat16")
    assert model.config.dtype == "bfloat16"
    jm.save_pretrained(model, tmp_path / "bf16")
    assert json.loads((tmp_path / "bf16/config.json").read_text())["dtype"] == "bfloat16"

    reloaded = _hf_load(tmp_path / "bf16", dtype=torch.bfloat16)
    assert reloaded.dtype == torch.bfloat16
    # Reading bf16 storage back into float32 parameters.
    as_f32 = jm.load_pretrained(tmp_path / "bf16", dtype="float32")
    ids, mask = padded_batch
    real = mask.astype(bool)
    want = torch_forward(hf_model, ids, mask).logits.numpy()
    got = np.asarray(forward(as_f32, ids, mask).logits)
    np.testing.assert_allclose(got[real], want[real], atol=0.1, rtol=0)
    # bf16 parameters with float32 compute.
    mixed = jm.load_pretrained(directory, dtype="bfloat16", compute_dtype="float32")
    got = np.asarray(forward(mixed, ids, mask).logits)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got[real], want[real], atol=0.1, rtol=0)


def test_gpt2_checkpoint_without_transformer_prefix(hf_checkpoint, padded_batch, forward, tmp_path):
    directory, _ = hf_checkpoint("gpt2")
    tensors = load_file(directory / "model.safetensors")
    bare = {name.removeprefix("transformer."): value for name, value in tensors.items()}
    assert "wte.weight" in bare
    save_file(bare, tmp_path / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())

    ids, mask = padded_batch
    want = np.asarray(forward(jm.load_pretrained(directory), ids, mask).logits)
    got = np.asarray(forward(jm.load_pretrained(tmp_path), ids, mask).logits)
    np.testing.assert_array_equal(got, want)


def test_tokenizer_files_are_copied(hf_checkpoint, tmp_path):
    vocab = {"[UNK]": 0, "hello": 1, "world": 2}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    tokenizer.save_pretrained(tmp_path / "tok")

    # (A Llama config: AutoTokenizer maps some model types, e.g. qwen2, to
    # their own tokenizer classes, which this toy tokenizer is not.)
    directory, _ = hf_checkpoint("llama_gqa_bias")
    model = jm.load_pretrained(directory)
    jm.save_pretrained(model, tmp_path / "from_dir", tokenizer=tmp_path / "tok")
    jm.save_pretrained(model, tmp_path / "from_object", tokenizer=tokenizer)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "from_dir" / name).read_bytes() == (tmp_path / "tok" / name).read_bytes()
    for out in ("from_dir", "from_object"):
        loaded = transformers.AutoTokenizer.from_pretrained(tmp_path / out)
        assert loaded("hello world")["input_ids"] == [1, 2]
