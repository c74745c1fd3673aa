"""Loading and saving models in the Hugging Face directory format.

A directory holds ``config.json`` and ``model.safetensors`` (or sharded
``model-XXXXX-of-YYYYY.safetensors`` files with
``model.safetensors.index.json``). Which family reads it is decided by the
config's ``model_type``; the family's weight map says which tensor becomes
which parameter. Loading never needs PyTorch and never materialises the
whole model on one device: the model is created abstractly
(``nnx.eval_shape``) and each parameter is read, converted and placed into
its own sharding one at a time.
"""

import json
import os
import pathlib
import re
import shutil

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding

from jdistill.models.config import DecoderConfig
from jdistill.models.decoder import Decoder
from jdistill.models.dtypes import canonical_dtype_name, resolve_dtype
from jdistill.models.errors import CheckpointError, ModelConfigError
from jdistill.models.families import Family, family_for_hf_config, get_family
from jdistill.models.param_paths import flatten_with_param_paths, map_with_param_path
from jdistill.models.safetensors_io import (
    SUPPORTED_STORAGE_DTYPES,
    SafetensorsCheckpoint,
    write_checkpoint,
)
from jdistill.models.sharding import ShardingConfig
from jdistill.models.weight_map import TensorMap

CONFIG_FILE = "config.json"
# Files a tokenizer directory may hold; copied by ``save_pretrained``.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
# Weight files ``save_pretrained`` writes (and replaces).
_WEIGHT_FILE = re.compile(r"model(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?")
# How many names an error message lists before summarising.
_MAX_LISTED = 10


# ----------------------------------------------------------------------
# Configuration.


def read_hf_config(path: str | os.PathLike) -> dict:
    """The parsed ``config.json`` of an HF model directory."""
    config_path = pathlib.Path(path) / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"{config_path} does not exist")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{config_path} is not valid JSON ({error}).") from error
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path} does not hold a JSON object.")
    return config


def config_from_hf_dir(path: str | os.PathLike, **overrides) -> DecoderConfig:
    """The :class:`DecoderConfig` of an HF model directory.

    Args:
        path: directory with a ``config.json``.
        **overrides: ``DecoderConfig`` fields to replace (e.g.
            ``param_dtype="bfloat16"``, ``remat="full"``).
    """
    hf = read_hf_config(path)
    config = family_for_hf_config(hf).config_from_hf(hf)
    return config.replace(**overrides) if overrides else config


# ----------------------------------------------------------------------
# Loading.


def _layers(entry: TensorMap, config: DecoderConfig):
    return range(config.num_layers) if entry.per_layer else (None,)


def _list(names) -> str:
    names = sorted(names)
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f" ... and {more} more" if more > 0 else "")


def _expected_hf_shapes(entry: TensorMap, config: DecoderConfig, param_shapes: dict) -> list:
    """Shapes the HF tensors of one entry must have (one layer's worth)."""
    zeros = []
    for path in entry.param_paths:
        shape = param_shapes[path][1:] if entry.per_layer else param_shapes[path]
        # Zero-stride arrays: transforms see the right shapes without memory.
        zeros.append(np.broadcast_to(np.zeros((), np.float32), shape))
    return [a.shape for a in entry.transform.to_hf(tuple(zeros), config)]


class _CheckpointPlan:
    """Validates a checkpoint against a config and resolves stored names."""

    def __init__(
        self, ckpt: SafetensorsCheckpoint, family: Family, config: DecoderConfig, param_shapes: dict
    ):
        self.ckpt = ckpt
        self.config = config
        self.entries = family.weight_map(config)
        covered = sorted(p for e in self.entries for p in e.param_paths)
        if covered != sorted(param_shapes):
            raise ModelConfigError(
                f"family {family.model_type!r} weight map covers {covered} but the model "
                f"has parameters {sorted(param_shapes)}"
            )
        self.stored = {}
        for name in ckpt.names():
            self.stored[family.canonical_name(name)] = name
        needed = {
            name
            for e in self.entries
            for layer in _layers(e, config)
            for name in e.names_for_layer(layer)
        }
        ignored = [re.compile(p) for p in family.ignored_tensors]
        if config.tie_word_embeddings:
            ignored.append(re.compile("^" + re.escape(family.lm_head_name) + "$"))
        missing = needed - self.stored.keys()
        extra = {
            n for n in self.stored if n not in needed and not any(p.search(n) for p in ignored)
        }
        if missing or extra:
            problems = []
            if missing:
                problems.append(f"missing tensors ({len(missing)}): {_list(missing)}")
            if extra:
                problems.append(f"unexpected tensors ({len(extra)}): {_list(extra)}")
            raise CheckpointError(
                f"checkpoint {ckpt.directory} does not match its {family.model_type!r} "
                f"config: " + "; ".join(problems)
            )
        self._check_shapes_and_dtypes(param_shapes)

    def _check_shapes_and_dtypes(self, param_shapes: dict) -> None:
        for entry in self.entries:
            shapes = _expected_hf_shapes(entry, self.config, param_shapes)
            for layer in _layers(entry, self.config):
                for name, shape in zip(entry.names_for_layer(layer), shapes, strict=True):
                    stored = self.stored[name]
                    found = self.ckpt.shape(stored)
                    if found != tuple(shape):
                        raise CheckpointError(
                            f"tensor {stored!r} has shape {found}, expected {tuple(shape)} "
                            f"from config.json"
                        )
                    dtype = self.ckpt.storage_dtype(stored)
                    if dtype not in SUPPORTED_STORAGE_DTYPES:
                        raise CheckpointError(
                            f"tensor {stored!r} is stored as {dtype}; supported storage "
                            f"dtypes are {list(SUPPORTED_STORAGE_DTYPES)}"
                        )

    def host_params(self, entry: TensorMap, param_shapes: dict, dtype: np.dtype) -> list:
        """The parameters of one entry as host arrays in ``dtype``.

        Per-layer entries are read layer by layer into one stacked array.
        """
        if not entry.per_layer:
            arrays = tuple(self.ckpt.read(self.stored[n]) for n in entry.hf_names)
            return [a.astype(dtype) for a in entry.transform.to_params(arrays, self.config)]
        stacked = [np.empty(param_shapes[p], dtype) for p in entry.param_paths]
        for layer in range(self.config.num_layers):
            names = entry.names_for_layer(layer)
            arrays = tuple(self.ckpt.read(self.stored[n]) for n in names)
            for out, value in zip(
                stacked, entry.transform.to_params(arrays, self.config), strict=True
            ):
                out[layer] = value.astype(dtype)
        return stacked


def _place(host: np.ndarray, sharding: NamedSharding | None) -> jax.Array:
    """Puts a host array on device(s); each device receives only its shard."""
    if sharding is None:
        return jax.device_put(host)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def load_pretrained(
    path: str | os.PathLike,
    *,
    dtype="float32",
    compute_dtype=None,
    mesh: Mesh | None = None,
    sharding: ShardingConfig | None = None,
    remat: str = "none",
    attention_impl: str = "auto",
) -> Decoder:
    """Loads an HF model directory into a :class:`Decoder`.

    Args:
        path: directory with ``config.json`` and safetensors weights.
        dtype: parameter dtype (``"float32"``, ``"bfloat16"``, ``"float16"``);
            stored tensors are converted.
        compute_dtype: activation dtype; defaults to ``dtype``.
        mesh: place every parameter in its sharding on this mesh (see
            ``jdistill.models.sharding``); ``None`` puts it on the default
            device.
        sharding: parameter sharding rules; defaults to ``ShardingConfig()``.
        remat: rematerialisation policy of the blocks.
        attention_impl: attention implementation (``DecoderConfig.attention_impl``).

    Raises:
        ModelConfigError: unknown architecture or unsupported config/dtype.
        CheckpointError: missing, unexpected or mis-shaped tensors, or an
            unsupported storage dtype.
    """
    hf = read_hf_config(path)
    family = family_for_hf_config(hf)
    param_dtype = canonical_dtype_name(dtype)
    config = family.config_from_hf(hf).replace(
        param_dtype=param_dtype,
        dtype=param_dtype if compute_dtype is None else compute_dtype,
        remat=remat,
        attention_impl=attention_impl,
    )
    abstract_model = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract_model)
    param_shapes = {p: leaf.shape for p, leaf in flatten_with_param_paths(abstract_state).items()}
    sharding = ShardingConfig() if sharding is None else sharding
    np_dtype = resolve_dtype(param_dtype)

    placed = {}
    with SafetensorsCheckpoint(path) as ckpt:
        plan = _CheckpointPlan(ckpt, family, config, param_shapes)
        for entry in plan.entries:
            for param_path, host in zip(
                entry.param_paths, plan.host_params(entry, param_shapes, np_dtype), strict=True
            ):
                target = None
                if mesh is not None:
                    spec = sharding.partition_spec(param_path, host.shape, mesh)
                    target = NamedSharding(mesh, spec)
                placed[param_path] = _place(host, target)
    state = map_with_param_path(lambda p, _: placed[p], abstract_state)
    return nnx.merge(graphdef, state)


# ----------------------------------------------------------------------
# Saving.


def _to_host(array: jax.Array) -> np.ndarray:
    if isinstance(array, jax.Array) and not array.is_fully_addressable:
        array = multihost_utils.process_allgather(array, tiled=True)
    return np.asarray(jax.device_get(array))


def _hf_tensors(model: Decoder, family: Family, save_dtype: np.dtype) -> dict:
    config = model.config
    params = {
        p: _to_host(v) for p, v in flatten_with_param_paths(nnx.state(model, nnx.Param)).items()
    }
    tensors = {}
    for entry in family.weight_map(config):
        for layer in _layers(entry, config):
            values = tuple(
                params[p] if layer is None else params[p][layer] for p in entry.param_paths
            )
            for name, value in zip(
                entry.names_for_layer(layer), entry.transform.to_hf(values, config), strict=True
            ):
                tensors[name] = np.ascontiguousarray(value.astype(save_dtype))
    return tensors


def _remove_stale_weights(path: pathlib.Path) -> None:
    """Deletes weight files a previous save left, so they cannot shadow new ones."""
    for file in path.iterdir():
        if _WEIGHT_FILE.fullmatch(file.name):
            file.unlink()


def _save_tokenizer(tokenizer, path: pathlib.Path) -> None:
    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(path))
        return
    source = pathlib.Path(tokenizer)
    files = [source / name for name in TOKENIZER_FILES if (source / name).is_file()]
    if not files:
        raise CheckpointError(f"no tokenizer files ({list(TOKENIZER_FILES)}) in {source}")
    for file in files:
        shutil.copy2(file, path / file.name)


def save_pretrained(
    model: Decoder,
    path: str | os.PathLike,
    *,
    tokenizer=None,
    dtype=None,
    max_shard_size: int | str | None = None,
) -> pathlib.Path:
    """Writes ``model`` as an HF directory ``AutoModelForCausalLM`` can load.

    Args:
        model: a :class:`Decoder` of a registered family.
        path: output directory (created if needed).
        tokenizer: a directory whose tokenizer files are copied, or an object
            with ``save_pretrained`` (e.g. a transformers tokenizer).
        dtype: storage dtype; defaults to the parameter dtype.
        max_shard_size: shard the weights (``"5GB"``, ``"20KB"`` or bytes);
            ``None`` writes a single ``model.safetensors``.

    Returns:
        The output directory. In multi-process runs every process must call
        this (parameters are gathered) and only process 0 writes.
    """
    config = model.config
    family = get_family(config.model_type)
    hf_config = family.config_to_hf(config)  # Validates before anything is written.
    save_dtype_name = canonical_dtype_name(config.param_dtype if dtype is None else dtype)
    tensors = _hf_tensors(model, family, resolve_dtype(save_dtype_name))
    path = pathlib.Path(path)
    if jax.process_index() != 0:
        return path
    path.mkdir(parents=True, exist_ok=True)
    _remove_stale_weights(path)
    hf_config = {
        "architectures": [family.architectures[0]],
        "model_type": family.model_type,
        "dtype": save_dtype_name,
        **hf_config,
    }
    with open(path / CONFIG_FILE, "w", encoding="utf-8") as f:
        json.dump(hf_config, f, indent=2, sort_keys=True)
    write_checkpoint(tensors, path, max_shard_size)
    if tokenizer is not None:
        _save_tokenizer(tokenizer, path)
    return path
