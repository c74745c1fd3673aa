"""What Gemma 2 and Gemma 3 share: the checkpoint layout and most of ``config.json``.

Both are Llama-style decoders with four RMSNorms per layer (before and after
attention, before and after the MLP: ``post_norms``), RMSNorms that multiply
by ``1 + weight`` (``norm_unit_offset``; the checkpoint's weights are stored
unchanged), embeddings scaled by ``sqrt(hidden_size)`` (``scale_embeddings``),
a GeGLU MLP (``gelu_pytorch_tanh``), attention scaled by
``query_pre_attn_scalar ** -0.5`` instead of ``head_dim ** -0.5``, sliding-window
layers listed in ``layer_types``, and a final-logit soft-cap.

Tensor names follow ``Gemma2ForCausalLM`` / ``Gemma3ForCausalLM``:
``model.layers.{i}.input_layernorm`` (``blocks/attn_norm``),
``post_attention_layernorm`` (``blocks/attn_post_norm``; in Llama this name is
the pre-MLP norm), ``pre_feedforward_layernorm`` (``blocks/mlp_norm``),
``post_feedforward_layernorm`` (``blocks/mlp_post_norm``).
"""

from collections.abc import Mapping
from typing import Any

from jdistill.models.config import DecoderConfig
from jdistill.models.errors import ModelConfigError
from jdistill.models.families import hf_config
from jdistill.models.weight_map import TensorMap, copy, linear

_LAYER = "model.layers.{layer}."
SLIDING, FULL = "sliding_attention", "full_attention"
IGNORED_TENSORS = (r"\.rotary_emb\.\w*inv_freq$",)
_SPECIAL_TOKENS = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}


def weight_map(config: DecoderConfig) -> tuple[TensorMap, ...]:
    """The Gemma 2/3 :class:`TensorMap` entries for ``config``."""
    entries = [copy("model.embed_tokens.weight", "embed/embedding")]
    for proj in ("q", "k", "v", "o"):
        entries.append(linear(f"{_LAYER}self_attn.{proj}_proj.weight", f"blocks/attn/{proj}_proj/kernel"))
        if config.qkv_bias:
            entries.append(copy(f"{_LAYER}self_attn.{proj}_proj.bias", f"blocks/attn/{proj}_proj/bias"))
    if config.qk_norm:
        entries.append(copy(f"{_LAYER}self_attn.q_norm.weight", "blocks/attn/q_norm/scale"))
        entries.append(copy(f"{_LAYER}self_attn.k_norm.weight", "blocks/attn/k_norm/scale"))
    for proj in ("gate", "up", "down"):
        entries.append(linear(f"{_LAYER}mlp.{proj}_proj.weight", f"blocks/mlp/{proj}_proj/kernel"))
    entries += [
        copy(f"{_LAYER}input_layernorm.weight", "blocks/attn_norm/scale"),
        copy(f"{_LAYER}post_attention_layernorm.weight", "blocks/attn_post_norm/scale"),
        copy(f"{_LAYER}pre_feedforward_layernorm.weight", "blocks/mlp_norm/scale"),
        copy(f"{_LAYER}post_feedforward_layernorm.weight", "blocks/mlp_post_norm/scale"),
        copy("model.norm.weight", "final_norm/scale"),
    ]
    if not config.tie_word_embeddings:
        entries.append(linear("lm_head.weight", "lm_head/kernel"))
    return tuple(entries)


def _optional_positive(hf: Mapping[str, Any], key: str, default):
    value = hf.get(key, default)
    return None if value is None else float(value)


def sliding_window_from_hf(hf: Mapping[str, Any], num_layers: int, default_pattern: int, default_window: int) -> dict:
    """``sliding_window``/``sliding_window_layers`` from ``layer_types``.

    Without ``layer_types`` (older configs) every ``pattern``-th layer is
    global and the others slide, ``pattern`` being ``sliding_window_pattern``
    (Gemma 3: 6, five local layers per global one) or ``default_pattern``,
    as in transformers.
    """
    layer_types = hf.get("layer_types")
    if layer_types is None:
        pattern = int(hf.get("sliding_window_pattern") or hf.get("_sliding_window_pattern") or default_pattern)
        layer_types = [SLIDING if (i + 1) % pattern else FULL for i in range(num_layers)]
    layer_types = list(layer_types)
    unknown = sorted({t for t in layer_types} - {SLIDING, FULL})
    if unknown or len(layer_types) != num_layers:
        raise ModelConfigError(
            f"layer_types must list {num_layers} entries of {[SLIDING, FULL]}, got {layer_types}"
        )
    window = hf.get("sliding_window", default_window)
    sliding = tuple(t == SLIDING for t in layer_types)
    if window is None or not any(sliding):
        return {"sliding_window": None, "sliding_window_layers": None}
    return {"sliding_window": int(window), "sliding_window_layers": sliding}


def config_from_hf(hf: Mapping[str, Any], model_type: str, defaults: Mapping[str, Any], **family_fields) -> DecoderConfig:
    """The fields Gemma 2 and Gemma 3 ``config.json`` files share, plus ``family_fields``.

    ``defaults`` are the transformers config class defaults of the fields a
    ``config.json`` may omit: ``head_dim``, ``query_pre_attn_scalar``,
    ``sliding_window``, ``sliding_window_pattern``, ``final_logit_softcapping``,
    ``max_position_embeddings``.
    """
    if hf.get("use_bidirectional_attention"):
        raise ModelConfigError(f"{model_type}: use_bidirectional_attention (non-causal attention) is not supported")
    num_layers = hf_config.require(hf, "num_hidden_layers")
    heads = hf_config.require(hf, "num_attention_heads")
    qpas = hf.get("query_pre_attn_scalar", defaults["query_pre_attn_scalar"])
    attention_bias = bool(hf.get("attention_bias", False))
    fields = dict(
        model_type=model_type,
        vocab_size=hf_config.require(hf, "vocab_size"),
        hidden_size=hf_config.require(hf, "hidden_size"),
        num_layers=num_layers,
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or defaults["head_dim"],
        mlp_dim=hf_config.require(hf, "intermediate_size"),
        norm_type="rms",
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        norm_unit_offset=True,
        post_norms=True,
        scale_embeddings=True,
        activation=hf_config.activation_from_hf(
            hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
        ),
        gated_mlp=True,
        position_embedding="rope",
        max_position_embeddings=int(hf.get("max_position_embeddings", defaults["max_position_embeddings"])),
        qkv_bias=attention_bias,
        o_bias=attention_bias,
        mlp_bias=False,
        attention_scale=float(qpas) ** -0.5,
        final_logit_softcap=_optional_positive(hf, "final_logit_softcapping", defaults["final_logit_softcapping"]),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)),
        init_std=float(hf.get("initializer_range", 0.02)),
        **sliding_window_from_hf(hf, num_layers, defaults["sliding_window_pattern"], defaults["sliding_window"]),
        # Gemma's special tokens (pad 0, eos 1, bos 2) when the config omits them.
        **hf_config.special_tokens_from_hf({**_SPECIAL_TOKENS, **hf}),
    )
    fields.update(family_fields)
    return DecoderConfig(**fields)


def query_pre_attn_scalar(config: DecoderConfig):
    """``attention_scale ** -2`` (an int when it is one, as transformers types it)."""
    scale = config.head_dim**-0.5 if config.attention_scale is None else config.attention_scale
    scalar = scale**-2
    return int(round(scalar)) if abs(scalar - round(scalar)) < 1e-6 * max(1.0, scalar) else scalar


def config_to_hf(config: DecoderConfig, default_window: int) -> dict:
    """The ``config.json`` fields Gemma 2 and Gemma 3 share."""
    hf_config.check_expressible(
        config,
        config.model_type,
        norm_type="rms",
        norm_unit_offset=True,
        post_norms=True,
        scale_embeddings=True,
        gated_mlp=True,
        position_embedding="rope",
        o_bias=config.qkv_bias,
        mlp_bias=False,
    )
    layers = config.layer_uses_window()
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.mlp_dim,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "hidden_activation": config.activation,
        "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.norm_eps,
        "attention_bias": config.qkv_bias,
        "query_pre_attn_scalar": query_pre_attn_scalar(config),
        "sliding_window": default_window if config.sliding_window is None else config.sliding_window,
        "layer_types": [SLIDING if s else FULL for s in layers],
        "final_logit_softcapping": config.final_logit_softcap,
        "use_bidirectional_attention": False,
        "tie_word_embeddings": config.tie_word_embeddings,
        "initializer_range": config.init_std,
        **hf_config.special_tokens_to_hf(config),
    }
