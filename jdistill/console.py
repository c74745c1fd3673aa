"""Run-log lines printed by process 0, without breaking the progress bar."""

from __future__ import annotations

import sys

import jax


def info(message: str) -> None:
    if jax.process_index() != 0:
        return
    from tqdm import tqdm  # tqdm.write keeps an active progress bar intact.

    tqdm.write(f"[jdistill] {message}", file=sys.stdout)
    sys.stdout.flush()


def warn(message: str) -> None:
    """A run-log line that needs the user's attention (printed, not just logged)."""
    info(f"WARNING: {message}")
