"""Bad input gets a clear error naming the problem."""

import json
import shutil

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

import jdistill.models as jm
from jdistill.models.families import FAMILIES


def _copy_with_tensors(directory, destination, edit):
    """Copies a checkpoint, letting ``edit(tensors)`` change its tensor dict."""
    shutil.copy(directory / "config.json", destination / "config.json")
    tensors = load_file(directory / "model.safetensors")
    edit(tensors)
    save_file(tensors, destination / "model.safetensors", metadata={"format": "pt"})
    return destination


def _edit_config(directory, destination, **changes):
    shutil.copytree(directory, destination, dirs_exist_ok=True)
    config = json.loads((destination / "config.json").read_text())
    config.update(changes)
    (destination / "config.json").write_text(json.dumps(config))
    return destination


def test_unknown_model_type_lists_supported(hf_checkpoint, tmp_path):
    directory, _ = hf_checkpoint("llama_gqa_bias")
    _edit_config(directory, tmp_path, model_type="bert", architectures=["BertForMaskedLM"])
    with pytest.raises(jm.ModelConfigError, match="unknown architecture") as error:
        jm.load_pretrained(tmp_path)
    for model_type in FAMILIES:
        assert model_type in str(error.value)
    assert "bert" in str(error.value)


def test_unsupported_architecture_of_known_type(hf_checkpoint, tmp_path):
    directory, _ = hf_checkpoint("llama_gqa_bias")
    _edit_config(directory, tmp_path, architectures=["LlamaForSequenceClassification"])
    with pytest.raises(jm.ModelConfigError, match="LlamaForSequenceClassification"):
        jm.load_pretrained(tmp_path)


def test_missing_tensor_is_named(hf_checkpoint, tmp_path):
    directory, _ = hf_checkpoint("llama_gqa_bias")
    name = "model.layers.1.self_attn.k_proj.bias"
    _copy_with_tensors(directory, tmp_path, lambda t: t.pop(name))
    with pytest.raises(jm.CheckpointError, match="missing tensors") as error:
        jm.load_pretrained(tmp_path)
    assert name in str(error.value)


def test_unexpected_tensor_is_named(hf_checkpoint, tmp_path):
    directory, _ = hf_checkpoint("qwen3_qk_norm")
    name = "model.layers.0.self_attn.extra.weight"
    _copy_with_tensors(
        directory, tmp_path, lambda t: t.update({name: np.zeros((2, 2), np.float32)})
    )
    with pytest.raises(jm.CheckpointError, match="unexpected tensors") as error:
        jm.load_pretrained(tmp_path)
    assert name in str(error.value)


def test_shape_mismatch_names_tensor_and_shapes(hf_checkpoint, tmp_path):
    directory, _ = hf_checkpoint("gpt2")
    name = "transformer.h.1.mlp.c_fc.weight"

    def truncate(tensors):
        tensors[name] = tensors[name][:, :10].copy()

    _copy_with_tensors(directory, tmp_path, truncate)
    with pytest.raises(jm.CheckpointError, match="shape") as error:
        jm.load_pretrained(tmp_path)
    message = str(error.value)
    assert name in message and "(64, 10)" in message and "(64, 256)" in message


def test_unsupported_storage_dtype_is_named(hf_checkpoint, tmp_path):
    directory, _ = hf_checkpoint("qwen2_tied")
    name = "model.norm.weight"

    def to_int(tensors):
        tensors[name] = tensors[name].astype(np.int32)

    _copy_with_tensors(directory, tmp_path, to_int)
    with pytest.raises(jm.CheckpointError, match="I32") as error:
        jm.load_pretrained(tmp_path)
    assert name in str(error.value)


@pytest.mark.parametrize("dtype", ["float8", "int8", "float64"])
def test_unsupported_dtype_lists_valid_ones(hf_checkpoint, dtype):
    directory, _ = hf_checkpoint("qwen2_tied")
    with pytest.raises(jm.ModelConfigError, match="unsupported dtype") as error:
        jm.load_pretrained(directory, dtype=dtype)
    for valid in ("float32", "bfloat16", "float16"):
        assert valid in str(error.value)


def test_unsupported_rope_type(hf_checkpoint, tmp_path):
    directory, _ = hf_checkpoint("llama_gqa_bias")
    rope = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}
    _edit_config(directory, tmp_path, rope_parameters=rope)
    with pytest.raises(jm.ModelConfigError, match="yarn"):
        jm.load_pretrained(tmp_path)


def test_legacy_rope_fields_are_read(hf_checkpoint, tmp_path):
    directory, _ = hf_checkpoint("llama3_rope_scaling")
    config = json.loads((directory / "config.json").read_text())
    rope = config.pop("rope_parameters")
    legacy = {"rope_type": "llama3", **{k: v for k, v in rope.items() if k != "rope_type"}}
    theta = legacy.pop("rope_theta")
    _edit_config(directory, tmp_path, rope_theta=theta, rope_scaling=legacy)
    stripped = json.loads((tmp_path / "config.json").read_text())
    stripped.pop("rope_parameters")
    (tmp_path / "config.json").write_text(json.dumps(stripped))
    assert jm.config_from_hf_dir(tmp_path) == jm.config_from_hf_dir(directory)


def test_missing_weights_file(hf_checkpoint, tmp_path):
    directory, _ = hf_checkpoint("llama_gqa_bias")
    shutil.copy(directory / "config.json", tmp_path / "config.json")
    with pytest.raises(jm.CheckpointError, match="model.safetensors"):
        jm.load_pretrained(tmp_path)


def test_missing_config(tmp_path):
    with pytest.raises(jm.CheckpointError, match="config.json"):
        jm.load_pretrained(tmp_path)


def test_saving_a_config_the_family_cannot_express(hf_checkpoint, tmp_path):
    directory, _ = hf_checkpoint("llama_gqa_bias")
    config = jm.config_from_hf_dir(directory, qk_norm=True)
    # The config is checked before any weight is read, so an abstract model will do.
    model = nnx.eval_shape(lambda: jm.Decoder(config, rngs=nnx.Rngs(0)))
    with pytest.raises(jm.ModelConfigError, match="qk_norm"):
        jm.save_pretrained(model, tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_invalid_config_values():
    base = dict(
        model_type="llama",
        vocab_size=16,
        hidden_size=16,
        num_layers=1,
        num_heads=4,
        num_kv_heads=4,
        head_dim=4,
        mlp_dim=32,
    )
    with pytest.raises(jm.ModelConfigError, match="multiple of num_kv_heads"):
        jm.DecoderConfig(**{**base, "num_kv_heads": 3})
    with pytest.raises(jm.ModelConfigError, match="norm_type"):
        jm.DecoderConfig(**base, norm_type="batch")
    with pytest.raises(jm.ModelConfigError, match="valid dtypes"):
        jm.DecoderConfig(**base, param_dtype="int4")
    with pytest.raises(jm.ModelConfigError, match="activation"):
        jm.DecoderConfig(**base, activation="swish2")
    assert jm.DecoderConfig(**base, param_dtype="bf16").param_dtype == "bfloat16"
