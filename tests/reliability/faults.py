"""Fault injection for the reliability suite: NaN rows, flipped bytes, truncated files, a small full disk."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EMBEDDING = "model.embed_tokens.weight"


def nan_rows(model_dir: str, token_ids, *, tensor: str = EMBEDDING) -> None:
    """Sets rows ``token_ids`` of ``tensor`` in a model directory's ``model.safetensors`` to NaN."""
    path = os.path.join(model_dir, "model.safetensors")
    tensors = load_file(path)
    weight = tensors[tensor].copy()
    weight[np.asarray(token_ids)] = np.nan
    tensors[tensor] = weight
    save_file(tensors, path, metadata={"format": "pt"})


def copy_model(source: str, target: str) -> str:
    shutil.copytree(source, target)
    return target


def largest_array_file(checkpoint_step_dir: str) -> str:
    """The biggest array data file of an orbax checkpoint step (the student's parameters live there)."""
    files = glob.glob(os.path.join(checkpoint_step_dir, "state", "**", "d", "*"), recursive=True)
    return max(files, key=os.path.getsize)


def flip_byte(path: str, offset: int | None = None) -> None:
    data = bytearray(open(path, "rb").read())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 0x10
    open(path, "wb").write(bytes(data))


def flip_bytes_across(path: str, count: int = 16) -> None:
    """Flips ``count`` bytes spread over the first half of ``path`` (an orbax data file holds regions a restore
    never reads; a single flipped byte may land in one)."""
    size = os.path.getsize(path)
    for offset in np.linspace(size * 0.02, size * 0.5, count).astype(int):
        flip_byte(path, int(offset))


def truncate(path: str, keep: float = 0.5) -> None:
    data = open(path, "rb").read()
    open(path, "wb").write(data[: int(len(data) * keep)])


def can_mount_tmpfs() -> bool:
    """Whether a private mount namespace with a tmpfs can be made here (``unshare -rm``, no root needed)."""
    if not shutil.which("unshare") or sys.platform != "linux":
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d"],
        capture_output=True, timeout=30,
    )
    return probe.returncode == 0


def run_on_small_tmpfs(mount_point: str, size: str, script: str, env: dict | None = None, timeout: int = 240):
    """Runs ``python -c script`` in a private mount namespace where ``mount_point`` is a tmpfs of ``size``."""
    os.makedirs(mount_point, exist_ok=True)
    command = f"mount -t tmpfs -o size={size} tmpfs {mount_point} && exec {sys.executable} -c \"$JD_SCRIPT\""
    full_env = {**os.environ, "PYTHONPATH": REPO, "JD_SCRIPT": script, **(env or {})}
    return subprocess.run(["unshare", "-rm", "sh", "-c", command], capture_output=True, text=True, cwd=REPO,
                          env=full_env, timeout=timeout)
