"""Mistral (``MistralForCausalLM``): Llama layout plus a sliding window.

The window (``sliding_window``, all layers) is applied in the attention mask;
``None`` means full causal attention.
"""

from jdistill.models.config import DecoderConfig
from jdistill.models.errors import ModelConfigError
from jdistill.models.families import hf_config, llama_layout
from jdistill.models.families.family import Family


def config_from_hf(hf) -> DecoderConfig:
    """Reads a Mistral ``config.json``."""
    if hf.get("layer_types") is not None:
        raise ModelConfigError(
            "Mistral configs with per-layer layer_types (alternating attention) are not supported"
        )
    window = hf.get("sliding_window")
    return llama_layout.config_from_hf(
        hf,
        "mistral",
        sliding_window=None if window is None else int(window),
    )


def config_to_hf(config: DecoderConfig) -> dict:
    """Writes a Mistral ``config.json`` dict."""
    hf_config.check_expressible(
        config,
        "mistral",
        qkv_bias=False,
        o_bias=False,
        mlp_bias=False,
        qk_norm=False,
        sliding_window_layers=None,
    )
    return {**llama_layout.config_to_hf(config), "sliding_window": config.sliding_window}


FAMILY = Family(
    model_type="mistral",
    architectures=("MistralForCausalLM",),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weight_map=llama_layout.weight_map,
    ignored_tensors=llama_layout.IGNORED_TENSORS,
)
