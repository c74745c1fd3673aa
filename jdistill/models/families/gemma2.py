"""Gemma 2 (``Gemma2ForCausalLM``): the Gemma layout with soft-capped attention and logits.

Layers alternate between a local sliding window (even layers) and global
attention (``layer_types``); attention scores are soft-capped at
``attn_logit_softcapping`` (``attn_logit_softcap``) and the logits at
``final_logit_softcapping`` (``final_logit_softcap``). One rope base for all
layers. See :mod:`jdistill.models.families.gemma_layout` for what Gemma 2 and
3 share.
"""

from jdistill.models.config import DecoderConfig
from jdistill.models.families import gemma_layout, hf_config
from jdistill.models.families.family import Family

# transformers' Gemma2Config defaults of the fields a config.json may omit.
DEFAULTS = {
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "sliding_window": 4096,
    "sliding_window_pattern": 2,
    "final_logit_softcapping": 30.0,
    "attn_logit_softcapping": 50.0,
    "max_position_embeddings": 8192,
}


def config_from_hf(hf) -> DecoderConfig:
    """Reads a Gemma 2 ``config.json``."""
    attn_cap = hf.get("attn_logit_softcapping", DEFAULTS["attn_logit_softcapping"])
    return gemma_layout.config_from_hf(
        hf,
        "gemma2",
        DEFAULTS,
        qk_norm=False,
        attn_logit_softcap=None if attn_cap is None else float(attn_cap),
        **hf_config.rope_from_hf(hf),
    )


def config_to_hf(config: DecoderConfig) -> dict:
    """Writes a Gemma 2 ``config.json`` dict."""
    hf_config.check_expressible(config, "gemma2", qk_norm=False, local_rope_theta=None)
    return {
        **gemma_layout.config_to_hf(config, DEFAULTS["sliding_window"]),
        "attn_logit_softcapping": config.attn_logit_softcap,
        **hf_config.rope_to_hf(config),
    }


FAMILY = Family(
    model_type="gemma2",
    architectures=("Gemma2ForCausalLM",),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weight_map=gemma_layout.weight_map,
    ignored_tensors=gemma_layout.IGNORED_TENSORS,
)
