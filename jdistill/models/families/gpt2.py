"""GPT-2 (``GPT2LMHeadModel``): learned positions, LayerNorm, GELU, Conv1D.

GPT-2's ``Conv1D`` weights are already ``[in, out]`` (no transpose); the
fused ``c_attn`` projection is split into q/k/v. The head is tied to ``wte``
unless ``tie_word_embeddings`` is false. Checkpoints are accepted with or
without the ``transformer.`` prefix (the original OpenAI upload has none).
"""

from jdistill.models.config import DecoderConfig
from jdistill.models.errors import ModelConfigError
from jdistill.models.families import hf_config
from jdistill.models.families.family import Family
from jdistill.models.weight_map import TensorMap, copy, fused_qkv, linear

_LAYER = "transformer.h.{layer}."


def weight_map(config: DecoderConfig) -> tuple[TensorMap, ...]:
    """The GPT-2 :class:`TensorMap` entries for ``config``."""
    entries = [
        copy("transformer.wte.weight", "embed/embedding"),
        copy("transformer.wpe.weight", "position_embed/embedding"),
        copy(f"{_LAYER}ln_1.weight", "blocks/attn_norm/scale"),
        copy(f"{_LAYER}ln_1.bias", "blocks/attn_norm/bias"),
        fused_qkv(f"{_LAYER}attn.c_attn.weight", "kernel"),
        fused_qkv(f"{_LAYER}attn.c_attn.bias", "bias"),
        copy(f"{_LAYER}attn.c_proj.weight", "blocks/attn/o_proj/kernel"),
        copy(f"{_LAYER}attn.c_proj.bias", "blocks/attn/o_proj/bias"),
        copy(f"{_LAYER}ln_2.weight", "blocks/mlp_norm/scale"),
        copy(f"{_LAYER}ln_2.bias", "blocks/mlp_norm/bias"),
        copy(f"{_LAYER}mlp.c_fc.weight", "blocks/mlp/up_proj/kernel"),
        copy(f"{_LAYER}mlp.c_fc.bias", "blocks/mlp/up_proj/bias"),
        copy(f"{_LAYER}mlp.c_proj.weight", "blocks/mlp/down_proj/kernel"),
        copy(f"{_LAYER}mlp.c_proj.bias", "blocks/mlp/down_proj/bias"),
        copy("transformer.ln_f.weight", "final_norm/scale"),
        copy("transformer.ln_f.bias", "final_norm/bias"),
    ]
    if not config.tie_word_embeddings:
        entries.append(linear("lm_head.weight", "lm_head/kernel"))
    return tuple(entries)


def canonical_name(name: str) -> str:
    """Adds the ``transformer.`` prefix bare GPT-2 checkpoints lack."""
    if name.startswith(("transformer.", "lm_head.")):
        return name
    return "transformer." + name


def config_from_hf(hf) -> DecoderConfig:
    """Reads a GPT-2 ``config.json``."""
    unsupported = {
        "scale_attn_by_inverse_layer_idx": hf.get("scale_attn_by_inverse_layer_idx", False),
        "add_cross_attention": hf.get("add_cross_attention", False),
    }
    enabled = [name for name, value in unsupported.items() if value]
    if enabled:
        raise ModelConfigError(f"GPT-2 options {enabled} are not supported")
    hidden = hf_config.require(hf, "n_embd")
    heads = hf_config.require(hf, "n_head")
    return DecoderConfig(
        model_type="gpt2",
        vocab_size=hf_config.require(hf, "vocab_size"),
        hidden_size=hidden,
        num_layers=hf_config.require(hf, "n_layer"),
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=hidden // heads,
        mlp_dim=hf.get("n_inner") or 4 * hidden,
        norm_type="layer",
        norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        activation=hf_config.activation_from_hf(hf.get("activation_function", "gelu_new")),
        gated_mlp=False,
        position_embedding="learned",
        max_position_embeddings=int(hf.get("n_positions", 1024)),
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        attention_scale=None if hf.get("scale_attn_weights", True) else 1.0,
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)),
        init_std=float(hf.get("initializer_range", 0.02)),
        **hf_config.special_tokens_from_hf(hf),
    )


def config_to_hf(config: DecoderConfig) -> dict:
    """Writes a GPT-2 ``config.json`` dict."""
    hf_config.check_expressible(
        config,
        "gpt2",
        num_kv_heads=config.num_heads,
        head_dim=config.hidden_size // config.num_heads,
        norm_type="layer",
        gated_mlp=False,
        position_embedding="learned",
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        qk_norm=False,
        sliding_window=None,
    )
    if config.attention_scale not in (None, 1.0):
        raise ModelConfigError(
            f"GPT-2 can only express attention_scale None or 1.0, got {config.attention_scale}"
        )
    return {
        "vocab_size": config.vocab_size,
        "n_positions": config.max_position_embeddings,
        "n_embd": config.hidden_size,
        "n_layer": config.num_layers,
        "n_head": config.num_heads,
        "n_inner": config.mlp_dim,
        "activation_function": config.activation,
        "layer_norm_epsilon": config.norm_eps,
        "scale_attn_weights": config.attention_scale is None,
        "tie_word_embeddings": config.tie_word_embeddings,
        "initializer_range": config.init_std,
        **hf_config.special_tokens_to_hf(config),
    }


FAMILY = Family(
    model_type="gpt2",
    architectures=("GPT2LMHeadModel",),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weight_map=weight_map,
    ignored_tensors=(r"\.attn\.bias$", r"\.attn\.masked_bias$"),
    canonical_name=canonical_name,
)
