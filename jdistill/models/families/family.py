"""What a model family declares: its HF config mapping and its weight map."""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from jdistill.models.config import DecoderConfig
from jdistill.models.weight_map import TensorMap


def _same_name(name: str) -> str:
    return name


@dataclasses.dataclass(frozen=True)
class Family:
    """One Hugging Face architecture family.

    Attributes:
        model_type: the HF ``model_type`` this family reads and writes; also
            ``DecoderConfig.model_type`` of its models.
        architectures: HF ``architectures`` entries it accepts; the first is
            written on save.
        config_from_hf: ``config.json`` dict -> :class:`DecoderConfig`.
        config_to_hf: the inverse (raises ``ModelConfigError`` when the config
            uses a feature the family cannot express).
        weight_map: config -> the :class:`TensorMap` entries of a checkpoint.
        lm_head_name: checkpoint name of the output head; ignored on load when
            the embeddings are tied.
        ignored_tensors: regular expressions of checkpoint tensors that carry
            no parameters (buffers such as rotary ``inv_freq``).
        canonical_name: maps a checkpoint name to the spelling ``weight_map``
            uses (e.g. GPT-2 checkpoints with or without ``transformer.``).
    """

    model_type: str
    architectures: tuple[str, ...]
    config_from_hf: Callable[[Mapping[str, Any]], DecoderConfig]
    config_to_hf: Callable[[DecoderConfig], dict]
    weight_map: Callable[[DecoderConfig], tuple[TensorMap, ...]]
    lm_head_name: str = "lm_head.weight"
    ignored_tensors: tuple[str, ...] = ()
    canonical_name: Callable[[str], str] = _same_name
