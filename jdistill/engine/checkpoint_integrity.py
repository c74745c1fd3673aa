"""What a checkpoint must restore to: per-array layouts and checksums written with it.

Every checkpoint's JSON metadata holds, for each array of the saved state (by
its pytree path), its shape, dtype and two 32-bit checksums of its bits (a
plain and a position-weighted sum, computed on device in one jitted pass; both
are sums modulo 2^32, so they do not depend on how the array is sharded).
Restoring compares

* the layouts with the state the current run expects *before* reading any
  array: a different student or method is a clear error
  (:class:`CheckpointMismatchError`), never a partial restore;
* the checksums with the restored arrays: flipped bytes in an array file are
  found, and the checkpoint is treated as damaged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = 1
# Odd multiplier (Knuth) that spreads the element index over 32 bits.
_MIX = np.uint32(2654435761)


class CheckpointMismatchError(ValueError):
    """A checkpoint written by a run with other shapes (another student or method)."""


def _words(x: jax.Array) -> jax.Array:
    """The bits of ``x`` as ``uint32`` values (one per element; two per element for 64-bit dtypes)."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    bits = jnp.dtype(x.dtype).itemsize * 8
    if bits == 32:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    if bits in (8, 16):
        return jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{bits}")).astype(jnp.uint32)
    if bits == 64:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)  # a trailing axis of 2
    raise TypeError(f"no checksum for dtype {x.dtype}")


def _checksum(x: jax.Array) -> jax.Array:
    words = _words(jnp.asarray(x))
    index = jnp.zeros(words.shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(words.ndim)):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, words.shape, axis) * np.uint32(stride % 2**32)
        stride *= words.shape[axis]
    mixed = words * (index * _MIX + np.uint32(1))
    mixed = mixed ^ (mixed >> np.uint32(15))
    return jnp.stack([jnp.sum(words, dtype=jnp.uint32), jnp.sum(mixed, dtype=jnp.uint32)])


def _leaves(tree) -> list[tuple[str, jax.Array]]:
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


@jax.jit
def _checksums(leaves: list) -> list:
    return [_checksum(x) for x in leaves]


def checksums(tree) -> dict[str, list[int]]:
    """``{pytree path: [sum, weighted sum]}`` of every array of ``tree``."""
    named = _leaves(tree)
    sums = _checksums([leaf for _, leaf in named])
    return {name: [int(v) for v in np.asarray(s.addressable_data(0))] for (name, _), s in zip(named, sums)}


def record(tree) -> dict:
    """The integrity record saved with a checkpoint of ``tree``."""
    sums = checksums(tree)
    return {
        "format": FORMAT,
        "leaves": {name: {"shape": list(leaf.shape), "dtype": str(leaf.dtype), "checksum": sums[name]}
                   for name, leaf in _leaves(tree)},
    }


def layout_differences(integrity: dict, abstract_tree) -> list[str]:
    """How the arrays the current run expects differ from the checkpoint's (empty: they match)."""
    saved = integrity["leaves"]
    expected = {name: leaf for name, leaf in _leaves(abstract_tree)}
    problems = []
    for name in sorted(expected.keys() - saved.keys()):
        problems.append(f"{name} is not in the checkpoint")
    for name in sorted(saved.keys() - expected.keys()):
        problems.append(f"{name} is in the checkpoint but not in this run")
    for name in sorted(expected.keys() & saved.keys()):
        leaf, entry = expected[name], saved[name]
        if list(leaf.shape) != list(entry["shape"]) or str(leaf.dtype) != entry["dtype"]:
            problems.append(
                f"{name} is {entry['dtype']}{tuple(entry['shape'])} there, {leaf.dtype}{tuple(leaf.shape)} now"
            )
    return problems


def checksum_differences(integrity: dict, restored_tree) -> list[str]:
    """The arrays whose restored bits do not match the checksums saved with them."""
    sums = checksums(restored_tree)
    return [name for name, entry in integrity["leaves"].items() if sums.get(name) != list(entry["checksum"])]
