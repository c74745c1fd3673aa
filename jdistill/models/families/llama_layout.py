"""The checkpoint layout shared by Llama-style families (Llama, Mistral, Qwen).

Tensor names follow ``LlamaForCausalLM``: ``model.embed_tokens``,
``model.layers.{i}.self_attn.{q,k,v,o}_proj``, ``model.layers.{i}.mlp.{gate,
up,down}_proj``, the two RMSNorms per layer, ``model.norm`` and ``lm_head``.
Optional entries (biases, q/k norms, untied head) appear when the config has
them. The families only differ in how their ``config.json`` reads.
"""

from collections.abc import Mapping
from typing import Any

from jdistill.models.config import DecoderConfig
from jdistill.models.families import hf_config
from jdistill.models.weight_map import TensorMap, copy, linear

_LAYER = "model.layers.{layer}."


def weight_map(config: DecoderConfig) -> tuple[TensorMap, ...]:
    """The Llama-style :class:`TensorMap` entries for ``config``."""
    entries = [copy("model.embed_tokens.weight", "embed/embedding")]
    for proj in ("q", "k", "v", "o"):
        entries.append(
            linear(f"{_LAYER}self_attn.{proj}_proj.weight", f"blocks/attn/{proj}_proj/kernel")
        )
        has_bias = config.o_bias if proj == "o" else config.qkv_bias
        if has_bias:
            entries.append(
                copy(f"{_LAYER}self_attn.{proj}_proj.bias", f"blocks/attn/{proj}_proj/bias")
            )
    if config.qk_norm:
        entries.append(copy(f"{_LAYER}self_attn.q_norm.weight", "blocks/attn/q_norm/scale"))
        entries.append(copy(f"{_LAYER}self_attn.k_norm.weight", "blocks/attn/k_norm/scale"))
    for proj in ("gate", "up", "down"):
        entries.append(linear(f"{_LAYER}mlp.{proj}_proj.weight", f"blocks/mlp/{proj}_proj/kernel"))
        if config.mlp_bias:
            entries.append(copy(f"{_LAYER}mlp.{proj}_proj.bias", f"blocks/mlp/{proj}_proj/bias"))
    entries.append(copy(f"{_LAYER}input_layernorm.weight", "blocks/attn_norm/scale"))
    entries.append(copy(f"{_LAYER}post_attention_layernorm.weight", "blocks/mlp_norm/scale"))
    entries.append(copy("model.norm.weight", "final_norm/scale"))
    if not config.tie_word_embeddings:
        entries.append(linear("lm_head.weight", "lm_head/kernel"))
    return tuple(entries)


# Buffers some older checkpoints carry.
IGNORED_TENSORS = (r"\.rotary_emb\.inv_freq$",)


def config_from_hf(hf: Mapping[str, Any], model_type: str, **family_fields) -> DecoderConfig:
    """The fields every Llama-style ``config.json`` shares, plus ``family_fields``."""
    hidden = hf_config.require(hf, "hidden_size")
    heads = hf_config.require(hf, "num_attention_heads")
    fields = dict(
        model_type=model_type,
        vocab_size=hf_config.require(hf, "vocab_size"),
        hidden_size=hidden,
        num_layers=hf_config.require(hf, "num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hidden // heads,
        mlp_dim=hf_config.require(hf, "intermediate_size"),
        norm_type="rms",
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        activation=hf_config.activation_from_hf(hf.get("hidden_act", "silu")),
        gated_mlp=True,
        position_embedding="rope",
        max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        init_std=float(hf.get("initializer_range", 0.02)),
        **hf_config.rope_from_hf(hf),
        **hf_config.special_tokens_from_hf(hf),
    )
    fields.update(family_fields)
    return DecoderConfig(**fields)


def config_to_hf(config: DecoderConfig) -> dict:
    """The ``config.json`` fields every Llama-style family writes."""
    hf_config.check_expressible(
        config,
        config.model_type,
        norm_type="rms",
        gated_mlp=True,
        position_embedding="rope",
        attention_scale=None,
    )
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.mlp_dim,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": config.activation,
        "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.norm_eps,
        "tie_word_embeddings": config.tie_word_embeddings,
        "initializer_range": config.init_std,
        **hf_config.rope_to_hf(config),
        **hf_config.special_tokens_to_hf(config),
    }
