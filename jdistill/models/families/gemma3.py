"""Gemma 3 text (``Gemma3ForCausalLM``, ``model_type`` ``gemma3_text``).

The Gemma layout (:mod:`jdistill.models.families.gemma_layout`) plus q/k
RMSNorms (``1 + weight``, over ``head_dim``, before rope), five local
sliding-window layers per global one (``layer_types``, or
``sliding_window_pattern`` = 6 in older configs) and per-layer-type rope:
the local layers use ``rope_parameters["sliding_attention"]`` (base 10k, the
older ``rope_local_base_freq``), the global layers
``rope_parameters["full_attention"]`` (base 1M, with the model's rope scaling:
``linear`` x8 on the 4B-27B models). No attention soft-cap: transformers
ignores ``attn_logit_softcapping`` for Gemma 3, and so does jdistill.

The multimodal checkpoints (``model_type`` ``gemma3``,
``Gemma3ForConditionalGeneration``) are not read; their text decoder is this
architecture.
"""

from collections.abc import Mapping

from jdistill.models.config import DecoderConfig
from jdistill.models.families import gemma_layout, hf_config
from jdistill.models.families.family import Family

# transformers' Gemma3TextConfig defaults of the fields a config.json may omit.
DEFAULTS = {
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "sliding_window": 4096,
    "sliding_window_pattern": 6,
    "final_logit_softcapping": None,
    "max_position_embeddings": 131072,
}
GLOBAL_THETA, LOCAL_THETA = 1_000_000.0, 10_000.0


def rope_from_hf(hf) -> dict:
    """Global (``rope_theta``/``rope_scaling``) and local (``local_rope_*``) rope settings.

    Reads transformers 5's per-layer-type ``rope_parameters`` or the older
    ``rope_theta`` + ``rope_scaling`` (global layers) + ``rope_local_base_freq``
    (local layers).
    """
    params = hf.get("rope_parameters") or {}
    no_theta = {k: v for k, v in hf.items() if k != "rope_theta"}
    if any(isinstance(value, Mapping) for value in params.values()):
        full = dict(params.get(gemma_layout.FULL) or {})
        sliding = dict(params.get(gemma_layout.SLIDING) or {})
        if hf.get("rope_scaling"):
            full.update(hf["rope_scaling"])
    else:
        full = dict(hf.get("rope_scaling") or params)
        sliding = {"rope_type": "default"}
        if hf.get("rope_local_base_freq") is not None:
            sliding["rope_theta"] = hf["rope_local_base_freq"]
    if "rope_theta" not in full and hf.get("rope_theta") is not None:
        full["rope_theta"] = hf["rope_theta"]
    global_rope = hf_config.rope_from_params(full, no_theta, default_theta=GLOBAL_THETA)
    local_rope = hf_config.rope_from_params(sliding, no_theta, default_theta=LOCAL_THETA)
    return {
        **global_rope,
        "local_rope_theta": local_rope["rope_theta"],
        "local_rope_scaling": local_rope["rope_scaling"],
    }


def config_from_hf(hf) -> DecoderConfig:
    """Reads a Gemma 3 text ``config.json``."""
    return gemma_layout.config_from_hf(
        hf,
        "gemma3_text",
        DEFAULTS,
        qk_norm=True,
        attn_logit_softcap=None,  # Not applied by transformers' Gemma 3.
        **rope_from_hf(hf),
    )


def config_to_hf(config: DecoderConfig) -> dict:
    """Writes a Gemma 3 text ``config.json`` dict."""
    hf_config.check_expressible(config, "gemma3_text", qk_norm=True, attn_logit_softcap=None)
    if config.local_rope_theta is None:  # One rope for every layer.
        local_theta, local_scaling = config.rope_theta, config.rope_scaling
    else:
        local_theta, local_scaling = config.local_rope_theta, config.local_rope_scaling
    return {
        **gemma_layout.config_to_hf(config, DEFAULTS["sliding_window"]),
        "attn_logit_softcapping": None,
        "rope_parameters": {
            gemma_layout.FULL: hf_config.rope_params_to_hf(config.rope_theta, config.rope_scaling),
            gemma_layout.SLIDING: hf_config.rope_params_to_hf(local_theta, local_scaling),
        },
    }


FAMILY = Family(
    model_type="gemma3_text",
    architectures=("Gemma3ForCausalLM",),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weight_map=gemma_layout.weight_map,
    ignored_tensors=gemma_layout.IGNORED_TENSORS,
)
