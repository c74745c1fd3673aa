"""Llama 2 / 3 / 3.x (``LlamaForCausalLM``), including llama3 rope scaling.

``attention_bias`` puts biases on all four attention projections;
``mlp_bias`` on the three MLP projections.
"""

from jdistill.models.config import DecoderConfig
from jdistill.models.families import hf_config, llama_layout
from jdistill.models.families.family import Family


def config_from_hf(hf) -> DecoderConfig:
    """Reads a Llama ``config.json``."""
    attention_bias = bool(hf.get("attention_bias", False))
    return llama_layout.config_from_hf(
        hf,
        "llama",
        qkv_bias=attention_bias,
        o_bias=attention_bias,
        mlp_bias=bool(hf.get("mlp_bias", False)),
    )


def config_to_hf(config: DecoderConfig) -> dict:
    """Writes a Llama ``config.json`` dict."""
    hf_config.check_expressible(
        config, "llama", o_bias=config.qkv_bias, qk_norm=False, sliding_window=None
    )
    return {
        **llama_layout.config_to_hf(config),
        "attention_bias": config.qkv_bias,
        "mlp_bias": config.mlp_bias,
    }


FAMILY = Family(
    model_type="llama",
    architectures=("LlamaForCausalLM",),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weight_map=llama_layout.weight_map,
    ignored_tensors=llama_layout.IGNORED_TENSORS,
)
