"""LoRA adapters on a :class:`~jdistill.models.decoder.Decoder`: attach, split, merge, export.

LoRA (Hu et al., 2021) freezes a dense kernel ``W`` ``[in, out]`` and learns a
low-rank update: ``y = x W + (alpha / r) · dropout(x) A B`` with ``A``
``[in, r]`` (random) and ``B`` ``[r, out]`` (zeros, so a fresh adapter leaves
the model unchanged). The adapters are Flax NNX's own LoRA layer
(``nnx.LoRA``, whose ``lora_a`` / ``lora_b`` are ``nnx.LoRAParam`` variables)
hung on jdistill's :class:`~jdistill.models.layers.Linear` as ``.lora``; the
``alpha / r`` scale and the dropout are the Linear's (``nnx.LoRA`` has
neither). Because ``nnx.LoRAParam`` is its own variable type, a model
splits into ``(graphdef, adapters, base)`` with
``nnx.split(model, nnx.LoRAParam, ...)``: the engine trains and checkpoints
the adapters and passes the frozen base beside them.

Targets are named like the sharding rules name parameters: a target is a
regular expression that must match the end of a Linear's path, e.g.
``q_proj`` (every ``blocks/attn/q_proj``), ``attn/(q|v)_proj`` or
``lm_head``. Block layers are stacked, so their adapters carry the leading
``[num_layers]`` axis like every block parameter.

Exports: :func:`merged_model` folds ``W + (alpha/r)·A B`` into the kernels
(a plain Decoder for :func:`~jdistill.models.hf_io.save_pretrained`);
:func:`save_peft_adapter` writes a PEFT adapter directory
(``adapter_config.json`` + ``adapter_model.safetensors``) that
``peft.PeftModel.from_pretrained`` loads onto the base model in transformers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jdistill.models.dtypes import resolve_dtype
from jdistill.models.layers import Linear

# Every projection of the attention and the MLP (PEFT's "all-linear" minus the LM head).
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
STACKED_PREFIX = "blocks"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class LoraError(ValueError):
    """A LoRA setting that cannot apply to the model, naming the setting."""


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    """What to attach: rank ``r``, scale ``alpha / r``, input dropout, target layers.

    Attributes:
      rank: ``r`` >= 1.
      alpha: the scale's numerator (PEFT's ``lora_alpha``).
      dropout: dropout rate on the adapter's input, in ``[0, 1)`` (training only).
      targets: regular expressions matched against the end of each Linear's path.
      dtype: the adapters' parameter dtype.
      where: the config group named in errors (``student.lora``).
    """

    rank: int
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    dtype: str = "float32"
    where: str = "lora"

    def __post_init__(self):
        if not isinstance(self.rank, int) or self.rank < 1:
            raise LoraError(f"{self.where}.rank must be an integer >= 1; got {self.rank!r}.")
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha > 0):
            raise LoraError(f"{self.where}.alpha must be a number > 0; got {self.alpha!r}.")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise LoraError(f"{self.where}.dropout must be a number in [0, 1); got {self.dropout!r}.")
        if not self.targets:
            raise LoraError(f"{self.where}.targets must name at least one layer.")
        for target in self.targets:
            try:
                re.compile(target)
            except re.error as error:
                raise LoraError(f"{self.where}.targets: {target!r} is not a regular expression ({error}).") from None

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank


def parse_targets(text: str) -> tuple[str, ...]:
    """``"q_proj, v_proj"`` → ``('q_proj', 'v_proj')``."""
    return tuple(t.strip() for t in str(text).split(",") if t.strip())


def linear_layers(model: nnx.Module) -> dict[str, Linear]:
    """``{path: Linear}`` of every dense layer, paths ``/``-joined as in ``nnx.state`` (``blocks/attn/q_proj``)."""
    return {"/".join(str(p) for p in path): node for path, node in nnx.iter_graph(model)
            if isinstance(node, Linear)}


def matches(path: str, targets) -> bool:
    return any(re.search(rf"(^|/)(?:{target})$", path) for target in targets)


def lora_layers(model: nnx.Module) -> dict[str, Linear]:
    """The Linears that carry an adapter."""
    return {path: layer for path, layer in linear_layers(model).items() if layer.lora is not None}


def has_lora(model: nnx.Module) -> bool:
    return bool(lora_layers(model))


def apply_lora(model: nnx.Module, spec: LoraSpec, key: jax.Array) -> list[str]:
    """Attaches a fresh adapter (``B = 0``) to every Linear ``spec.targets`` match, in place; returns their paths.

    ``A`` is uniform in ``±1/sqrt(in)`` (PEFT's default, Kaiming-uniform with
    ``a = sqrt(5)``), ``B`` zeros. Block layers get ``[L, in, r]`` /
    ``[L, r, out]`` adapters.
    """
    layers = linear_layers(model)
    chosen = [path for path in layers if matches(path, spec.targets)]
    if not chosen:
        raise LoraError(
            f"{spec.where}.targets ({', '.join(spec.targets)}) matched no layer; the model's dense layers are "
            f"{', '.join(sorted(layers))}."
        )
    already = [path for path in chosen if layers[path].lora is not None]
    if already:
        raise LoraError(f"{', '.join(already)} already carry LoRA adapters.")
    dtype = resolve_dtype(spec.dtype)
    for index, path in enumerate(chosen):
        layer = layers[path]
        kernel = layer.kernel[...]
        make = _adapter_factory(*kernel.shape[-2:], spec.rank, layer.dtype, dtype)
        rngs = nnx.Rngs(params=jax.random.fold_in(key, index))
        if kernel.ndim == 3:  # stacked blocks: one adapter per layer
            make = nnx.split_rngs(splits=kernel.shape[0])(
                nnx.vmap(make, in_axes=(0,), out_axes=0, axis_size=kernel.shape[0]))
        layer.lora = make(rngs)
        layer.lora_scale = spec.scale
        layer.lora_dropout = float(spec.dropout)
    return chosen


def _adapter_factory(in_features: int, out_features: int, rank: int, compute_dtype, param_dtype):
    """``rngs -> nnx.LoRA`` with PEFT's initialisation: ``A`` uniform in ``±1/sqrt(in)``, ``B`` zeros."""
    bound = 1.0 / math.sqrt(in_features)

    def a_init(key, shape, dtype):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    def make(rngs):
        return nnx.LoRA(in_features, rank, out_features, dtype=compute_dtype, param_dtype=param_dtype,
                        a_initializer=a_init, b_initializer=nnx.initializers.zeros, rngs=rngs)

    return make


def split(model: nnx.Module):
    """``(graphdef, adapters, base)``: the ``nnx.LoRAParam`` leaves and everything else."""
    return nnx.split(model, nnx.LoRAParam, ...)


def merge(graphdef, params, base=None) -> nnx.Module:
    """The model from its parameters; a LoRA model's from ``(adapters, base)``."""
    return nnx.merge(graphdef, params) if base is None else nnx.merge(graphdef, params, base)


def set_dropout_keys(model: nnx.Module, key: jax.Array) -> None:
    """Gives every adapter with dropout its own key for this forward (in place; the merged model of one step).

    ``key``: raw ``uint32`` key data or a typed key. Without this call (evaluation,
    generation) the adapters run without dropout.
    """
    key = key if jnp.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key) else jax.random.wrap_key_data(key)
    for index, (path, layer) in enumerate(sorted(lora_layers(model).items())):
        if layer.lora_dropout <= 0:
            continue
        layer_key = jax.random.fold_in(key, index)
        stacked = layer.kernel[...].ndim == 3
        keys = jax.random.split(layer_key, layer.kernel.shape[0]) if stacked else layer_key
        layer.lora_key = nnx.Variable(jax.random.key_data(keys))


def lora_delta(layer: Linear) -> jax.Array:
    """``(alpha / r) · A B`` in float32, ``[in, out]`` (``[L, in, out]`` for block layers)."""
    a = layer.lora.lora_a[...].astype(jnp.float32)
    b = layer.lora.lora_b[...].astype(jnp.float32)
    return layer.lora_scale * jnp.matmul(a, b)


def merged_model(model: nnx.Module, dtype=None) -> nnx.Module:
    """A copy of ``model`` without adapters whose kernels are ``W + (alpha/r)·A B`` (summed in float32).

    ``dtype``: the merged kernels' dtype (default the base kernel's). ``model``
    itself is not changed.
    """
    copy = nnx.clone(model)
    for layer in lora_layers(copy).values():
        base = layer.kernel[...]
        out_dtype = base.dtype if dtype is None else resolve_dtype(dtype)
        layer.kernel = nnx.Param((base.astype(jnp.float32) + lora_delta(layer)).astype(out_dtype))
        layer.lora = None
        layer.lora_key = None
        layer.lora_scale = 0.0
        layer.lora_dropout = 0.0
    return copy


def adapter_summary(model: nnx.Module) -> dict:
    """Counts for the run log: adapters, their parameters, and the frozen base's."""
    adapters = nnx.state(model, nnx.LoRAParam)
    rest = nnx.state(model, nnx.Not(nnx.LoRAParam))
    count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))  # noqa: E731
    return {"layers": len(lora_layers(model)), "adapter parameters": count(adapters), "base parameters": count(rest)}


# ----------------------------------------------------------------------------------------------
# PEFT adapter directory.


def _hf_module_names(model: nnx.Module) -> dict[str, str]:
    """``{jdistill Linear path: HF module name with '{layer}'}`` for layers whose HF weight is one ``[out, in]``."""
    from jdistill.models.families import get_family  # families import models; imported when exporting

    family = get_family(model.config.model_type)
    names = {}
    for entry in family.weight_map(model.config):
        if len(entry.param_paths) == 1 and entry.param_paths[0].endswith("/kernel"):
            if entry.transform.name == "transpose" and entry.hf_names[0].endswith(".weight"):
                names[entry.param_paths[0][: -len("/kernel")]] = entry.hf_names[0][: -len(".weight")]
    return names


def save_peft_adapter(model: nnx.Module, path: str | os.PathLike, *, base_model_name_or_path: str = "",
                      dtype=None) -> pathlib.Path:
    """Writes the adapters as a PEFT LoRA directory, loadable with ``peft.PeftModel.from_pretrained(base, path)``.

    PEFT's layout: ``lora_A.weight`` ``[r, in]`` = ``Aᵀ``, ``lora_B.weight``
    ``[out, r]`` = ``Bᵀ``, named ``base_model.model.<HF module>.lora_{A,B}.weight``;
    ``adapter_config.json`` gives ``r``, ``lora_alpha`` (so PEFT's scale
    ``lora_alpha / r`` is jdistill's), ``lora_dropout`` and the targeted modules
    by their full HF names. Layers whose HF weight is not one PyTorch
    ``[out, in]`` linear (GPT-2's fused Conv1D ``c_attn``) cannot be expressed;
    export those models merged (:func:`merged_model`).
    """
    from safetensors.numpy import save_file

    layers = lora_layers(model)
    if not layers:
        raise LoraError("The model has no LoRA adapters to export.")
    hf_names = _hf_module_names(model)
    missing = sorted(set(layers) - set(hf_names))
    if missing:
        raise LoraError(
            f"{', '.join(missing)} have no one-to-one PyTorch linear in the {model.config.model_type} checkpoint "
            "layout, so PEFT cannot load adapters on them; export the merged model instead."
        )
    ranks = {int(layer.lora.lora_a.shape[-1]) for layer in layers.values()}
    scales = {layer.lora_scale for layer in layers.values()}
    dropouts = {layer.lora_dropout for layer in layers.values()}
    if len(ranks) != 1 or len(scales) != 1:
        raise LoraError("save_peft_adapter needs one rank and one alpha for every adapter.")
    (rank,), (scale,) = ranks, scales
    tensors, modules = {}, []
    for layer_path, layer in sorted(layers.items()):
        a = np.asarray(jax.device_get(layer.lora.lora_a[...]))
        b = np.asarray(jax.device_get(layer.lora.lora_b[...]))
        out_dtype = a.dtype if dtype is None else resolve_dtype(dtype)
        stacked = a.ndim == 3
        for index in range(a.shape[0]) if stacked else (None,):
            name = hf_names[layer_path].replace("{layer}", str(index)) if stacked else hf_names[layer_path]
            a_i, b_i = (a[index], b[index]) if stacked else (a, b)
            modules.append(name)
            tensors[f"base_model.model.{name}.lora_A.weight"] = np.ascontiguousarray(a_i.T.astype(out_dtype))
            tensors[f"base_model.model.{name}.lora_B.weight"] = np.ascontiguousarray(b_i.T.astype(out_dtype))
    out = pathlib.Path(path)
    if jax.process_index() != 0:
        return out
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(base_model_name_or_path) or None,
        "r": rank,
        "lora_alpha": scale * rank,
        "lora_dropout": max(dropouts),
        "target_modules": modules,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "init_lora_weights": True,
        "inference_mode": True,
    }
    with open(out / ADAPTER_CONFIG, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    save_file(tensors, str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return out
