"""Model families: the registry of HF architectures jdistill can load and save.

Each family lives in one small module declaring a :class:`Family`; adding a
family means writing that module and adding it to ``FAMILIES`` below.
"""

from collections.abc import Mapping
from typing import Any

from jdistill.models.errors import ModelConfigError
from jdistill.models.families import gemma2, gemma3, gpt2, llama, mistral, qwen2, qwen3
from jdistill.models.families.family import Family

# Families by HF ``model_type``.
FAMILIES: dict[str, Family] = {
    family.model_type: family
    for family in (
        llama.FAMILY, mistral.FAMILY, qwen2.FAMILY, qwen3.FAMILY, gpt2.FAMILY, gemma2.FAMILY, gemma3.FAMILY
    )
}


def supported_architectures() -> list[str]:
    """Every HF architecture name some family accepts."""
    return sorted(arch for family in FAMILIES.values() for arch in family.architectures)


def get_family(model_type: str) -> Family:
    """The family registered for ``model_type``."""
    if model_type not in FAMILIES:
        raise ModelConfigError(
            f"unknown model_type {model_type!r}; supported model types are {sorted(FAMILIES)}"
        )
    return FAMILIES[model_type]


def family_for_hf_config(hf: Mapping[str, Any]) -> Family:
    """The family that reads an HF ``config.json`` dict.

    Chosen by ``model_type``; the ``architectures`` entries must (when given)
    be causal-LM classes that family handles.
    """
    model_type = hf.get("model_type")
    architectures = list(hf.get("architectures") or [])
    if model_type not in FAMILIES:
        raise ModelConfigError(
            f"unknown architecture (model_type={model_type!r}, "
            f"architectures={architectures}); supported model types are "
            f"{sorted(FAMILIES)} with architectures {supported_architectures()}"
        )
    family = FAMILIES[model_type]
    unknown = [arch for arch in architectures if arch not in family.architectures]
    if unknown:
        raise ModelConfigError(
            f"unsupported architectures {unknown} for model_type {model_type!r}; "
            f"supported: {list(family.architectures)}"
        )
    return family


__all__ = ["FAMILIES", "Family", "family_for_hf_config", "get_family", "supported_architectures"]
