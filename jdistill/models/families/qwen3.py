"""Qwen3 (``Qwen3ForCausalLM``): Llama layout with q/k RMSNorm.

``q_norm``/``k_norm`` normalise each head (over ``head_dim``) before rope;
``head_dim`` is explicit and need not equal ``hidden_size / heads``.
``attention_bias`` puts biases on all four attention projections.
"""

from jdistill.models.config import DecoderConfig
from jdistill.models.families import hf_config, llama_layout
from jdistill.models.families.family import Family


def config_from_hf(hf) -> DecoderConfig:
    """Reads a Qwen3 ``config.json``."""
    attention_bias = bool(hf.get("attention_bias", False))
    num_layers = hf_config.require(hf, "num_hidden_layers")
    return llama_layout.config_from_hf(
        hf,
        "qwen3",
        qkv_bias=attention_bias,
        o_bias=attention_bias,
        mlp_bias=False,
        qk_norm=True,
        **hf_config.qwen_sliding_window_from_hf(hf, num_layers),
    )


def config_to_hf(config: DecoderConfig) -> dict:
    """Writes a Qwen3 ``config.json`` dict."""
    hf_config.check_expressible(
        config, "qwen3", o_bias=config.qkv_bias, mlp_bias=False, qk_norm=True
    )
    return {
        **llama_layout.config_to_hf(config),
        "attention_bias": config.qkv_bias,
        **hf_config.qwen_sliding_window_to_hf(config),
    }


FAMILY = Family(
    model_type="qwen3",
    architectures=("Qwen3ForCausalLM",),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weight_map=llama_layout.weight_map,
    ignored_tensors=llama_layout.IGNORED_TENSORS,
)
