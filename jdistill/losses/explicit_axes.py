"""The few operations whose output sharding Explicit mesh axes cannot infer, made explicit.

Under a mesh with ``AxisType.Explicit`` axes (the default of ``jax.make_mesh``)
every array's type carries its sharding, and an operation whose output
sharding is ambiguous raises ``ShardingTypeError`` instead of letting GSPMD
guess. Four kinds of operation in the loss kernels are ambiguous:

* a contraction over a sharded dimension (``einsum`` over the vocabulary of
  vocabulary-parallel logits, over the tokens of a gradient);
* a gather or scatter along a sharded dimension (picking target tokens out of
  ``[..., V]`` log-probabilities);
* a sort along a sharded dimension (adaptive KL's ordering of the vocabulary, ULD's
  sorted probabilities);
* a segment reduction (``jax.ops.segment_sum`` and kin: rows of any shard may
  land in any segment).

The functions here behave exactly like their ``jnp`` counterparts on
arrays without Explicit axes (plain arrays, Auto meshes, inside
``auto_axes``), and otherwise state the sharding the result should have:
free dimensions keep their inputs' sharding, contracted dimensions are
reduced across their shards, a sorted dimension is gathered first. Values
are identical in both modes.
"""

from __future__ import annotations

import string

import jax
import jax.numpy as jnp
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

Array = jax.Array


def explicit_spec(x) -> tuple | None:
    """Per-dimension mesh axes of ``x`` when its type is sharded over Explicit axes, else ``None``.

    Each entry is ``None`` (replicated) or a tuple of mesh axis names.
    """
    sharding = getattr(jax.typeof(x), "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or getattr(mesh, "empty", True):
        return None
    explicit = {name for name, kind in zip(mesh.axis_names, mesh.axis_types) if kind == AxisType.Explicit}
    if not explicit:
        return None
    spec = tuple(sharding.spec) + (None,) * (jnp.ndim(x) - len(sharding.spec))
    out = []
    for entry in spec:
        names = () if entry is None else (entry if isinstance(entry, tuple) else (entry,))
        names = tuple(n for n in names if n in explicit)
        out.append(names or None)
    return tuple(out)


def _partition_spec(dims) -> P:
    return P(*(None if d is None else (d[0] if len(d) == 1 else d) for d in dims))


def _used(dims, skip: int | None = None) -> set:
    return {a for i, d in enumerate(dims) if d is not None and i != skip for a in d}


def reshard_dims(x: Array, dims) -> Array:
    """``x`` resharded to the per-dimension axes ``dims`` (no-op when already there)."""
    if explicit_spec(x) == tuple(dims):
        return x
    return jax.sharding.reshard(x, _partition_spec(dims))


def unshard_dim(x: Array, axis: int) -> Array:
    """``x`` with dimension ``axis`` replicated (gathered) under Explicit axes; ``x`` otherwise."""
    spec = explicit_spec(x)
    axis = axis % jnp.ndim(x)
    if spec is None or spec[axis] is None:
        return x
    return reshard_dims(x, spec[:axis] + (None,) + spec[axis + 1 :])


def like(x: Array, reference: Array) -> Array:
    """``x`` resharded as ``reference`` (same shape) under Explicit axes; ``x`` otherwise."""
    spec = explicit_spec(reference)
    if spec is None or explicit_spec(x) is None:
        return x
    return reshard_dims(x, spec)


def _parse(subscripts: str, ndims) -> tuple[list[str], str]:
    """Einsum subscripts with every ``...`` replaced by capital letters (right-aligned)."""
    if "->" not in subscripts:
        raise ValueError(f"explicit_axes.einsum needs an explicit output ('->'), got {subscripts!r}")
    lhs, out = subscripts.replace(" ", "").split("->")
    inputs = lhs.split(",")
    ellipsis = [n - (len(s) - 3) if "..." in s else 0 for s, n in zip(inputs, ndims)]
    width = max(ellipsis, default=0)
    letters = string.ascii_uppercase[:width]

    def expand(s, n):
        return s.replace("...", letters[width - n :]) if "..." in s else s

    return [expand(s, n) for s, n in zip(inputs, ellipsis)], expand(out, width)


def einsum(subscripts: str, *operands, **kwargs) -> Array:
    """``jnp.einsum`` that, under Explicit axes, aligns its operands and names its output sharding.

    Per index letter, the first operand that shards it sets its axes; another
    operand sharding it differently is resharded to match (or, when those axes
    are taken by another of its dimensions, the letter is replicated in every
    operand). Output dimensions take their letter's axes, each mesh axis once;
    contracted letters are summed across their shards.
    """
    specs = [explicit_spec(x) for x in operands]
    if all(s is None for s in specs):
        return jnp.einsum(subscripts, *operands, **kwargs)
    inputs, output = _parse(subscripts, [jnp.ndim(x) for x in operands])
    specs = [list(s) if s is not None else [None] * jnp.ndim(x) for s, x in zip(specs, operands)]
    letters = {c for s in inputs for c in s}
    target = {}
    for letter in sorted(letters):
        chosen = next((spec[s.index(letter)] for s, spec in zip(inputs, specs) if letter in s and spec[s.index(letter)]),
                      None)
        # Keep the axes only if every operand holding the letter can take them.
        for s, spec in zip(inputs, specs):
            if chosen is not None and letter in s:
                i = s.index(letter)
                if spec[i] != chosen and set(chosen) & _used(spec, skip=i):
                    chosen = None
        target[letter] = chosen
    # A mesh axis can shard one dimension per operand: drop later letters that reuse one.
    aligned = []
    for x, s, spec in zip(operands, inputs, specs):
        dims = [target[c] for c in s]
        seen = set()
        for i, d in enumerate(dims):
            if d is not None and set(d) & seen:
                dims[i] = None
            seen |= set(dims[i] or ())
        aligned.append(reshard_dims(x, dims) if explicit_spec(x) is not None and tuple(dims) != tuple(spec) else x)
    out_dims, seen = [], set()
    for c in output:
        d = target.get(c)
        if d is not None and set(d) & seen:
            d = None
        seen |= set(d or ())
        out_dims.append(d)
    return jnp.einsum(subscripts, *aligned, out_sharding=_partition_spec(out_dims), **kwargs)


def take_along_axis(arr: Array, indices: Array, axis: int = -1, *, mode=None) -> Array:
    """``jnp.take_along_axis`` whose result, under Explicit axes, is sharded like ``arr``
    on every other dimension and replicated along ``axis`` (a sharded ``axis`` is
    gathered by XLA: a masked local pick and a reduction across its shards)."""
    spec = explicit_spec(arr)
    if spec is None:
        if mode is None:
            return jnp.take_along_axis(arr, indices, axis=axis)
        return jnp.take_along_axis(arr, indices, axis=axis, mode=mode)
    ndim = jnp.ndim(arr)
    axis = axis % ndim
    out_dims = spec[:axis] + (None,) + spec[axis + 1 :]
    if explicit_spec(indices) is not None:
        indices = reshard_dims(indices, out_dims)
    index = tuple(
        indices if d == axis else jnp.arange(arr.shape[d]).reshape([-1 if e == d else 1 for e in range(ndim)])
        for d in range(ndim)
    )
    return arr.at[index].get(mode=mode, out_sharding=_partition_spec(out_dims))


def sort(x: Array, axis: int = -1) -> Array:
    """``jnp.sort(x, axis=axis)``, differentiable under Explicit axes.

    Under Explicit axes a sharded ``axis`` is gathered first (sorting needs
    whole rows), and the sorted values are picked from ``x`` by the sorting
    permutation (the gradient is its scatter, as ``jnp.sort``'s): ``lax.sort``'s
    own JVP builds an unsharded iota that Explicit axes reject. Same values.
    """
    if explicit_spec(x) is None:
        return jnp.sort(x, axis=axis)
    axis = axis % jnp.ndim(x)
    x = unshard_dim(x, axis)
    iota = jax.lax.broadcasted_iota(jnp.int32, x.shape, axis, out_sharding=_partition_spec(explicit_spec(x)))
    _, order = jax.lax.sort((jax.lax.stop_gradient(x), iota), dimension=axis, is_stable=True, num_keys=1)
    return take_along_axis(x, order, axis=axis)


def _indexed_dims(arr: Array, indices, axis: int):
    """Per-dimension axes of ``arr`` indexed along ``axis`` by 1-D ``indices``: the other
    dimensions keep ``arr``'s axes, ``axis`` takes the indices' (when no other dimension uses them)."""
    spec = explicit_spec(arr)
    index_spec = explicit_spec(indices)
    dims = index_spec[0] if index_spec is not None and jnp.ndim(indices) == 1 else None
    if dims is not None and set(dims) & _used(spec, skip=axis):
        dims = None
    return spec[:axis] + (dims,) + spec[axis + 1 :]


def take(arr: Array, indices, axis: int = -1) -> Array:
    """``jnp.take(arr, indices, axis=axis)`` for 1-D ``indices`` (an array or static numpy ids).

    Under Explicit axes the result keeps ``arr``'s sharding on every other
    dimension; along ``axis`` it is sharded like ``indices`` (replicated for
    static or replicated ids), whatever ``arr``'s ``axis`` was.
    """
    if explicit_spec(arr) is None:
        return jnp.take(arr, indices, axis=axis)
    axis = axis % jnp.ndim(arr)
    if jnp.ndim(indices) != 1:
        raise ValueError(f"explicit_axes.take: indices must be 1-D, got shape {jnp.shape(indices)}")
    out = _partition_spec(_indexed_dims(arr, indices, axis))
    return arr.at[(slice(None),) * axis + (indices,)].get(mode="fill", out_sharding=out)


def gather_rows(arr: Array, indices: Array) -> Array:
    """``arr[indices]`` for 1-D ``indices``, sharded like ``indices`` along the first
    dimension and like ``arr`` on the others under Explicit axes."""
    if explicit_spec(arr) is None:
        return arr[indices]
    return arr.at[indices].get(out_sharding=_partition_spec(_indexed_dims(arr, indices, 0)))


def segment_reduce(op, data: Array, segment_ids: Array, num_segments: int) -> Array:
    """``op(data, segment_ids, num_segments)`` for ``op`` one of ``jax.ops.segment_sum``,
    ``segment_max``, ``segment_min``, ...

    Under Explicit axes the ``[num_segments, ...]`` result is replicated along
    the segments (rows of every shard may land in any segment) and sharded like
    ``data`` on its other dimensions.
    """
    spec = explicit_spec(data)
    if spec is None and explicit_spec(segment_ids) is None:
        return op(data, segment_ids, num_segments)
    rest = spec[1:] if spec is not None else (None,) * (jnp.ndim(data) - 1)
    return op(data, segment_ids, num_segments, out_sharding=_partition_spec((None,) + rest))


def set_along_last_axis(shape, dtype, rows_NxK: Array, value, like_array: Array) -> Array:
    """``zeros(shape).at[row i, rows_NxK[i, k]].set(value)`` for ``[N, V]`` ``shape``, sharded as ``like_array``."""
    spec = explicit_spec(like_array)
    rows = jnp.arange(shape[0])[:, None]
    if spec is None:
        return jnp.zeros(shape, dtype).at[rows, rows_NxK].set(value)
    sharding = _partition_spec(spec)
    if explicit_spec(rows_NxK) is not None:
        rows_NxK = reshard_dims(rows_NxK, (spec[0], None))
    return jnp.zeros(shape, dtype, out_sharding=sharding).at[rows, rows_NxK].set(value, out_sharding=sharding)
