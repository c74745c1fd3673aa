"""Declarative maps between Hugging Face tensor names and jdistill parameters.

A family describes its checkpoint layout as a tuple of :class:`TensorMap`
entries. Each entry links one or more HF tensors to one or more jdistill
parameter paths through a :class:`Transform` (a pair of inverse functions on
NumPy arrays). Names containing ``{layer}`` are per-layer: the entry is
applied once per block and the results are stacked into the leading
``[num_layers]`` axis of the ``blocks/...`` parameters.
"""

import dataclasses
from collections.abc import Callable

import numpy as np

from jdistill.models.config import DecoderConfig

LAYER = "{layer}"

Arrays = tuple[np.ndarray, ...]


@dataclasses.dataclass(frozen=True)
class Transform:
    """A pair of inverse array transforms.

    Attributes:
        name: for messages.
        to_params: HF arrays (in ``TensorMap.hf_names`` order) -> jdistill
            arrays (in ``TensorMap.param_paths`` order).
        to_hf: the inverse.
    """

    name: str
    to_params: Callable[[Arrays, DecoderConfig], Arrays]
    to_hf: Callable[[Arrays, DecoderConfig], Arrays]


def _identity(arrays: Arrays, config: DecoderConfig) -> Arrays:
    del config
    return arrays


def _transpose(arrays: Arrays, config: DecoderConfig) -> Arrays:
    del config
    return tuple(a.T for a in arrays)


def _split_qkv(arrays: Arrays, config: DecoderConfig) -> Arrays:
    (fused,) = arrays
    q_end = config.q_dim
    k_end = q_end + config.kv_dim
    return (fused[..., :q_end], fused[..., q_end:k_end], fused[..., k_end:])


def _concat_qkv(arrays: Arrays, config: DecoderConfig) -> Arrays:
    del config
    return (np.concatenate(arrays, axis=-1),)


# One-to-one, unchanged (embeddings, norms, biases, GPT-2 Conv1D kernels which
# are already ``[in, out]``).
IDENTITY = Transform("identity", _identity, _identity)
# PyTorch ``nn.Linear`` weights are ``[out, in]``; jdistill kernels ``[in, out]``.
TRANSPOSE = Transform("transpose", _transpose, _transpose)
# A fused ``[..., q + k + v]`` tensor (GPT-2 ``c_attn``) <-> separate q/k/v.
SPLIT_QKV = Transform("split_qkv", _split_qkv, _concat_qkv)


@dataclasses.dataclass(frozen=True)
class TensorMap:
    """HF tensor name(s) <-> jdistill parameter path(s).

    Attributes:
        hf_names: checkpoint names; may contain ``{layer}``.
        param_paths: ``/``-joined parameter paths, e.g.
            ``"blocks/attn/q_proj/kernel"``.
        transform: how to convert between the two.
    """

    hf_names: tuple[str, ...]
    param_paths: tuple[str, ...]
    transform: Transform = IDENTITY

    @property
    def per_layer(self) -> bool:
        """True when the entry is applied once per block."""
        return LAYER in self.hf_names[0]

    def names_for_layer(self, layer: int | None) -> tuple[str, ...]:
        """The concrete HF names of block ``layer`` (``None``: not per-layer)."""
        if layer is None:
            return self.hf_names
        return tuple(name.replace(LAYER, str(layer)) for name in self.hf_names)


def copy(hf_name: str, param_path: str) -> TensorMap:
    """An unchanged one-to-one entry."""
    return TensorMap((hf_name,), (param_path,), IDENTITY)


def linear(hf_name: str, param_path: str) -> TensorMap:
    """A PyTorch ``[out, in]`` linear weight stored as an ``[in, out]`` kernel."""
    return TensorMap((hf_name,), (param_path,), TRANSPOSE)


def fused_qkv(hf_name: str, kind: str) -> TensorMap:
    """A fused q/k/v tensor split into ``blocks/attn/{q,k,v}_proj/<kind>``."""
    paths = tuple(f"blocks/attn/{p}_proj/{kind}" for p in ("q", "k", "v"))
    return TensorMap((hf_name,), paths, SPLIT_QKV)
