"""Qwen2 / Qwen2.5 (``Qwen2ForCausalLM``): Llama layout with q/k/v biases.

The attention output projection has no bias; small models tie the head to the
embeddings (``tie_word_embeddings``). The optional sliding window follows
``use_sliding_window`` / ``max_window_layers`` / ``layer_types``.
"""

from jdistill.models.config import DecoderConfig
from jdistill.models.families import hf_config, llama_layout
from jdistill.models.families.family import Family


def config_from_hf(hf) -> DecoderConfig:
    """Reads a Qwen2 ``config.json``."""
    num_layers = hf_config.require(hf, "num_hidden_layers")
    return llama_layout.config_from_hf(
        hf,
        "qwen2",
        qkv_bias=True,
        o_bias=False,
        mlp_bias=False,
        **hf_config.qwen_sliding_window_from_hf(hf, num_layers),
    )


def config_to_hf(config: DecoderConfig) -> dict:
    """Writes a Qwen2 ``config.json`` dict."""
    hf_config.check_expressible(
        config, "qwen2", qkv_bias=True, o_bias=False, mlp_bias=False, qk_norm=False
    )
    return {
        **llama_layout.config_to_hf(config),
        **hf_config.qwen_sliding_window_to_hf(config),
    }


FAMILY = Family(
    model_type="qwen2",
    architectures=("Qwen2ForCausalLM",),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weight_map=llama_layout.weight_map,
    ignored_tensors=llama_layout.IGNORED_TENSORS,
)
