"""The few operations whose output sharding Explicit mesh axes cannot infer, made explicit.

Under a mesh with ``AxisType.Explicit`` axes (the default of ``jax.make_mesh``)
every array's type carries its sharding, and an operation whose output
sharding is ambiguous raises ``ShardingTypeError`` instead of letting GSPMD
guess. Three kinds of operation in the loss kernels are ambiguous:

* a contraction over a sharded dimension (``einsum`` over the vocabulary of
  vocabulary-parallel logits, over the tokens of a gradient);
* a gather or scatter along a sharded dimension (picking target tokens out of
  ``[..., V]`` log-probabilities);
* a sort along a sharded dimension (adaptive KL's ordering of the vocabulary).

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


def take_along_axis(arr: Array, indices: Array, axis: int = -1) -> Array:
    """``jnp.take_along_axis`` whose result, under Explicit axes, is sharded like ``arr``
    on every other dimension and replicated along ``axis`` (a sharded ``axis`` is
    gathered by XLA: a masked local pick and a reduction across its shards)."""
    spec = explicit_spec(arr)
    if spec is None:
        return jnp.take_along_axis(arr, indices, axis=axis)
    ndim = jnp.ndim(arr)
    axis = axis % ndim
    out_dims = spec[:axis] + (None,) + spec[axis + 1 :]
    if explicit_spec(indices) is not None:
        indices = reshard_dims(indices, out_dims)
    index = tuple(
        indices if d == axis else jnp.arange(arr.shape[d]).reshape([-1 if e == d else 1 for e in range(ndim)])
        for d in range(ndim)
    )
    return arr.at[index].get(out_sharding=_partition_spec(out_dims))


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
