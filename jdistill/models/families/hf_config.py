"""Reading and writing the ``config.json`` fields several families share.

Covers rope settings in both spellings (transformers 5 ``rope_parameters``
and the older top-level ``rope_theta`` + ``rope_scaling``), special token ids,
sliding-window layer selection, and checks that a config only uses features a
family can express.
"""

from collections.abc import Mapping
from typing import Any

from jdistill.models.activations import ACTIVATIONS
from jdistill.models.config import ROPE_SCALING_TYPES, DecoderConfig, RopeScaling
from jdistill.models.errors import ModelConfigError

_DEFAULT_ROPE_THETA = 10000.0


def require(hf: Mapping[str, Any], key: str):
    """Returns ``hf[key]``, raising a clear error when it is absent."""
    if hf.get(key) is None:
        raise ModelConfigError(
            f"config.json of model_type {hf.get('model_type')!r} lacks required field {key!r}"
        )
    return hf[key]


def activation_from_hf(name: str) -> str:
    """Validates an HF activation name against ``ACTIVATIONS``."""
    if name not in ACTIVATIONS:
        raise ModelConfigError(
            f"unsupported activation {name!r}; supported activations are {sorted(ACTIVATIONS)}"
        )
    return name


def rope_from_hf(hf: Mapping[str, Any]) -> dict:
    """Returns ``{"rope_theta": ..., "rope_scaling": RopeScaling | None}``.

    Legacy ``rope_scaling`` wins over ``rope_parameters`` (as in transformers).
    """
    params = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
    if any(isinstance(value, Mapping) for value in params.values()):
        raise ModelConfigError("per-layer-type rope_parameters are not supported")
    return rope_from_params(params, hf)


def rope_from_params(params: Mapping[str, Any], hf: Mapping[str, Any], default_theta=None) -> dict:
    """``{"rope_theta", "rope_scaling"}`` of one ``rope_parameters`` dict.

    ``hf`` supplies top-level fallbacks (``rope_theta``,
    ``partial_rotary_factor``, ``max_position_embeddings``);
    ``default_theta`` is used when neither gives a base (default 10000).
    """
    theta = params.get("rope_theta", hf.get("rope_theta"))
    if theta is None:
        theta = _DEFAULT_ROPE_THETA if default_theta is None else default_theta
    theta = float(theta)
    partial = params.get("partial_rotary_factor", hf.get("partial_rotary_factor"))
    if partial is not None and float(partial) != 1.0:
        raise ModelConfigError(f"partial_rotary_factor={partial} is not supported")
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "default":
        return {"rope_theta": theta, "rope_scaling": None}
    if rope_type not in ROPE_SCALING_TYPES:
        raise ModelConfigError(
            f"unsupported rope_type {rope_type!r}; supported rope types are "
            f"{['default', *ROPE_SCALING_TYPES]}"
        )
    original = params.get("original_max_position_embeddings")
    if rope_type == "llama3" and original is None:
        original = hf.get("max_position_embeddings")
    scaling = RopeScaling(
        rope_type=rope_type,
        factor=float(params["factor"]),
        low_freq_factor=_optional_float(params.get("low_freq_factor")),
        high_freq_factor=_optional_float(params.get("high_freq_factor")),
        original_max_position_embeddings=None if original is None else int(original),
    )
    return {"rope_theta": theta, "rope_scaling": scaling}


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


def rope_to_hf(config: DecoderConfig) -> dict:
    """The transformers-5 ``rope_parameters`` entry for ``config``."""
    return {"rope_parameters": rope_params_to_hf(config.rope_theta, config.rope_scaling)}


def rope_params_to_hf(theta: float, scaling: RopeScaling | None) -> dict:
    """One transformers-5 ``rope_parameters`` dict."""
    params = {"rope_type": "default", "rope_theta": theta}
    if scaling is not None:
        params["rope_type"] = scaling.rope_type
        params["factor"] = scaling.factor
        if scaling.rope_type == "llama3":
            params["low_freq_factor"] = scaling.low_freq_factor
            params["high_freq_factor"] = scaling.high_freq_factor
            params["original_max_position_embeddings"] = scaling.original_max_position_embeddings
    return params


def special_tokens_from_hf(hf: Mapping[str, Any]) -> dict:
    """``bos_token_id``/``eos_token_id``/``pad_token_id`` (``None`` when absent)."""
    eos = hf.get("eos_token_id")
    return {
        "bos_token_id": hf.get("bos_token_id"),
        "eos_token_id": tuple(eos) if isinstance(eos, list) else eos,
        "pad_token_id": hf.get("pad_token_id"),
    }


def special_tokens_to_hf(config: DecoderConfig) -> dict:
    """The special token fields of ``config`` in ``config.json`` form."""
    eos = config.eos_token_id
    return {
        "bos_token_id": config.bos_token_id,
        "eos_token_id": list(eos) if isinstance(eos, tuple) else eos,
        "pad_token_id": config.pad_token_id,
    }


def qwen_sliding_window_from_hf(hf: Mapping[str, Any], num_layers: int) -> dict:
    """Qwen2/Qwen3 sliding window: off unless ``use_sliding_window``.

    The windowed layers come from ``layer_types`` when present, else they are
    the layers from ``max_window_layers`` on (the transformers rule).
    """
    window = hf.get("sliding_window")
    if not hf.get("use_sliding_window", False) or window is None:
        return {"sliding_window": None, "sliding_window_layers": None}
    layer_types = hf.get("layer_types")
    if layer_types is None:
        first = hf.get("max_window_layers", num_layers)
        layers = tuple(i >= first for i in range(num_layers))
    else:
        layers = tuple(kind == "sliding_attention" for kind in layer_types)
    return {"sliding_window": int(window), "sliding_window_layers": layers}


def qwen_sliding_window_to_hf(config: DecoderConfig) -> dict:
    """The inverse of :func:`qwen_sliding_window_from_hf`."""
    if config.sliding_window is None:
        return {"use_sliding_window": False, "sliding_window": None}
    layers = config.layer_uses_window()
    return {
        "use_sliding_window": True,
        "sliding_window": config.sliding_window,
        "max_window_layers": config.num_layers,
        "layer_types": ["sliding_attention" if s else "full_attention" for s in layers],
    }


def check_expressible(config: DecoderConfig, family: str, **required) -> None:
    """Raises when ``config`` differs from ``required`` field values.

    Families call this before writing a ``config.json`` so that a model with a
    feature the HF architecture lacks is rejected instead of saved wrongly.
    """
    wrong = {
        name: getattr(config, name)
        for name, value in required.items()
        if getattr(config, name) != value
    }
    if wrong:
        detail = ", ".join(f"{k}={v!r} (needs {required[k]!r})" for k, v in wrong.items())
        raise ModelConfigError(f"cannot express this config as a {family!r} checkpoint: {detail}")
