"""Reading and writing (possibly sharded) safetensors checkpoints with NumPy.

A checkpoint directory holds either ``model.safetensors`` or several shards
listed by ``model.safetensors.index.json``. Tensors are read one at a time
(memory-mapped by safetensors); bfloat16 is handled through ``ml_dtypes``.
No PyTorch, no pickle.
"""

import json
import os
import pathlib
import re

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from jdistill.models.errors import CheckpointError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# Storage dtypes (safetensors header names) that can be converted to a
# floating-point parameter dtype.
SUPPORTED_STORAGE_DTYPES = ("F64", "F32", "F16", "BF16")

_SIZE_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_size(size: int | str) -> int:
    """Bytes in ``size`` (an int or a string such as ``"20KB"``/``"5GB"``)."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", size)
    unit = match.group(2).upper() if match else None
    if match is None or (unit or "B") not in _SIZE_UNITS:
        raise ValueError(f"cannot parse size {size!r}; use e.g. 20KB, 500MB, 5GB")
    return int(float(match.group(1)) * _SIZE_UNITS[unit or "B"])


class SafetensorsCheckpoint:
    """Read access to the tensors of a checkpoint directory.

    Use as a context manager; files are opened lazily and closed on exit.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = pathlib.Path(directory)
        single = self.directory / SINGLE_FILE
        index = self.directory / INDEX_FILE
        if single.is_file():
            self._file_of = None
            self._files = [single]
        elif index.is_file():
            try:
                with open(index, encoding="utf-8") as f:
                    weight_map = json.load(f).get("weight_map")
            except (ValueError, AttributeError) as error:
                raise CheckpointError(f"{index} is not a valid index file ({error}).") from error
            if not isinstance(weight_map, dict):
                raise CheckpointError(f"{index} has no 'weight_map' object")
            self._file_of = {name: self.directory / file for name, file in weight_map.items()}
            self._files = sorted(set(self._file_of.values()))
            absent = [str(p.name) for p in self._files if not p.is_file()]
            if absent:
                raise CheckpointError(f"{index} lists shard files that do not exist: {absent}")
        else:
            raise CheckpointError(
                f"no {SINGLE_FILE} or {INDEX_FILE} in {self.directory} "
                "(only safetensors checkpoints are supported)"
            )
        self._handles = {}
        self._names = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self) -> None:
        """Closes every opened file."""
        for handle in self._handles.values():
            handle.__exit__(None, None, None)
        self._handles = {}

    def _handle(self, path: pathlib.Path):
        if path not in self._handles:
            try:
                handle = safe_open(str(path), framework="numpy")
                self._handles[path] = handle.__enter__()
            except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
                raise CheckpointError(
                    f"{path}: cannot read the safetensors header ({error}); the file is damaged, truncated or "
                    "not a safetensors file. Download or export it again."
                ) from error
        return self._handles[path]

    def _handle_for(self, name: str):
        if self._file_of is None:
            return self._handle(self._files[0])
        if name not in self._file_of:
            raise CheckpointError(f"tensor {name!r} is not in the checkpoint index")
        return self._handle(self._file_of[name])

    def names(self) -> list[str]:
        """Every tensor name in the checkpoint."""
        if self._names is None:
            names = []
            for path in self._files:
                names.extend(self._handle(path).keys())
            self._names = names
        return list(self._names)

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of ``name`` from the file header (no data read)."""
        return tuple(self._handle_for(name).get_slice(name).get_shape())

    def storage_dtype(self, name: str) -> str:
        """Safetensors dtype name of ``name`` (``"BF16"``, ``"F32"``, ...)."""
        return self._handle_for(name).get_slice(name).get_dtype()

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name`` as a NumPy array in its stored dtype."""
        dtype = self.storage_dtype(name)
        if dtype not in SUPPORTED_STORAGE_DTYPES:
            raise CheckpointError(
                f"tensor {name!r} is stored as {dtype}; supported storage dtypes are "
                f"{list(SUPPORTED_STORAGE_DTYPES)}"
            )
        try:
            return self._handle_for(name).get_tensor(name)
        except CheckpointError:
            raise
        except Exception as error:  # noqa: BLE001
            where = self._files[0] if self._file_of is None else self._file_of[name]
            raise CheckpointError(
                f"{where}: cannot read tensor {name!r} ({error}); the file is damaged or truncated. Download or "
                "export it again."
            ) from error


def write_checkpoint(
    tensors: dict[str, np.ndarray],
    directory: str | os.PathLike,
    max_shard_size: int | str | None = None,
) -> list[str]:
    """Writes ``tensors`` as safetensors, sharded when over ``max_shard_size``.

    Shards are named like transformers names them
    (``model-00001-of-00003.safetensors``) and listed in
    ``model.safetensors.index.json``. Returns the written file names.
    """
    directory = pathlib.Path(directory)
    limit = None if max_shard_size is None else parse_size(max_shard_size)
    shards: list[dict[str, np.ndarray]] = [{}]
    shard_bytes = 0
    for name, array in tensors.items():
        if limit is not None and shards[-1] and shard_bytes + array.nbytes > limit:
            shards.append({})
            shard_bytes = 0
        shards[-1][name] = np.ascontiguousarray(array)
        shard_bytes += array.nbytes
    metadata = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(directory / SINGLE_FILE), metadata=metadata)
        return [SINGLE_FILE]
    files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for file, shard in zip(files, shards, strict=True):
        save_file(shard, str(directory / file), metadata=metadata)
        weight_map.update({name: file for name in shard})
    index = {
        "metadata": {"total_size": int(sum(a.nbytes for a in tensors.values()))},
        "weight_map": weight_map,
    }
    with open(directory / INDEX_FILE, "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2, sort_keys=True)
    return [*files, INDEX_FILE]
