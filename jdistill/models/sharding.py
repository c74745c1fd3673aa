"""Device meshes and the one declaration of how every parameter shards.

Mesh axes are named ``data``, ``fsdp`` and ``tensor``. Parameters shard by
rules matched on their path (:data:`DEFAULT_RULES`): attention heads, the MLP
inner dimension and the vocabulary split over ``tensor``; the model width
splits over ``fsdp``; norms are replicated. The batch splits over
``data`` and ``fsdp``. The model code never mentions devices: shardings are
attached to the parameters (``load_pretrained(mesh=...)``, :func:`shard_model`)
and to the inputs (:func:`batch_sharding`), and XLA propagates them.

A dimension whose size is not divisible by its mesh axes is replicated
instead (e.g. GPT-2's 50257-token vocabulary).
"""

import dataclasses
import math
import re
from collections.abc import Sequence

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jdistill.models.param_paths import map_with_param_path

DATA = "data"
FSDP = "fsdp"
TENSOR = "tensor"
MESH_AXES = (DATA, FSDP, TENSOR)
# Mesh axes the batch dimension of activations is split over.
BATCH_AXES = (DATA, FSDP)

# (regular expression on the parameter path, mesh axes per dimension of one
# layer's parameter). First match wins. Stacked block parameters get an extra,
# unsharded leading layer axis automatically.
DEFAULT_RULES: tuple[tuple[str, tuple], ...] = (
    (r"/lora/lora_[ab]$", None),  # LoRA adapters [in, r] / [r, out] (jdistill.models.lora): small, replicated
    (r"^embed/embedding$", (TENSOR, FSDP)),  # [V, d]
    (r"^position_embed/embedding$", (None, FSDP)),  # [P, d]
    (r"attn/[qkv]_proj/kernel$", (FSDP, TENSOR)),  # [d, heads*D]
    (r"attn/[qkv]_proj/bias$", (TENSOR,)),
    (r"attn/o_proj/kernel$", (TENSOR, FSDP)),  # [heads*D, d]
    (r"mlp/(gate|up)_proj/kernel$", (FSDP, TENSOR)),  # [d, F]
    (r"mlp/(gate|up)_proj/bias$", (TENSOR,)),
    (r"mlp/down_proj/kernel$", (TENSOR, FSDP)),  # [F, d]
    (r"^lm_head/kernel$", (FSDP, TENSOR)),  # [d, V]
    (r"(norm/scale|norm/bias|o_proj/bias|down_proj/bias)$", None),  # replicated
)


def make_mesh(
    data: int = 1,
    fsdp: int = -1,
    tensor: int = 1,
    *,
    devices: Sequence[jax.Device] | None = None,
    axis_type: jax.sharding.AxisType = jax.sharding.AxisType.Auto,
) -> Mesh:
    """A ``(data, fsdp, tensor)`` mesh; one size may be ``-1`` (use the rest).

    Args:
        data, fsdp, tensor: axis sizes; their product must equal the number
            of devices.
        devices: defaults to ``jax.devices()``.
        axis_type: ``AxisType.Auto`` (default: GSPMD propagates shardings,
            what the engine's ``jax.jit(in_shardings=...)`` calls use) or
            ``AxisType.Explicit`` (the default of ``jax.make_mesh``: shardings
            are part of array types; use with ``jax.set_mesh``). The loss
            kernels and the train step work under both.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError(
            f"at most one mesh axis size may be -1, got {dict(zip(MESH_AXES, sizes, strict=True))}"
        )
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices cannot be split by {known}")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, sizes, strict=True))} needs {math.prod(sizes)} devices, "
            f"have {len(devices)}"
        )
    axis_types = (axis_type,) * len(MESH_AXES)
    return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=axis_types, devices=devices)


def _axes_size(mesh: Mesh, axes) -> int:
    names = axes if isinstance(axes, tuple) else (axes,)
    return math.prod(mesh.shape[name] for name in names)


def _keep_present_axes(mesh: Mesh, axes):
    """Drops mesh axis names ``mesh`` does not have."""
    names = axes if isinstance(axes, tuple) else (axes,)
    present = tuple(name for name in names if name in mesh.shape)
    if not present:
        return None
    return present if isinstance(axes, tuple) else present[0]


@dataclasses.dataclass(frozen=True)
class ShardingConfig:
    """How parameters map onto mesh axes.

    Attributes:
        rules: ``(path regex, axes)`` pairs; ``axes`` gives one mesh axis
            name, tuple of names or ``None`` per dimension of a single
            layer's parameter, or is ``None`` for "replicate". Every
            parameter must match a rule.
        stacked_prefix: parameters under this path prefix have a leading
            layer axis, which is never sharded.
    """

    rules: tuple[tuple[str, tuple | None], ...] = DEFAULT_RULES
    stacked_prefix: str = "blocks/"

    def partition_spec(self, path: str, shape: Sequence[int], mesh: Mesh | None = None) -> P:
        """The ``PartitionSpec`` of the parameter at ``path`` with ``shape``.

        With ``mesh``, axes the mesh lacks and axes that do not divide the
        dimension are dropped (that dimension is replicated).
        """
        matching = [(pattern, axes) for pattern, axes in self.rules if re.search(pattern, path)]
        if not matching:
            raise ValueError(f"no sharding rule matches parameter {path!r}")
        pattern, axes = matching[0]
        stacked = path.startswith(self.stacked_prefix)
        per_layer_rank = len(shape) - int(stacked)
        axes = (None,) * per_layer_rank if axes is None else tuple(axes)
        if len(axes) != per_layer_rank:
            raise ValueError(
                f"sharding rule {pattern!r} gives {len(axes)} axes for parameter {path!r} "
                f"of shape {tuple(shape)}"
            )
        if stacked:
            axes = (None, *axes)
        if mesh is not None:
            fitted = []
            for size, axis in zip(shape, axes, strict=True):
                axis = None if axis is None else _keep_present_axes(mesh, axis)
                if axis is not None and size % _axes_size(mesh, axis):
                    axis = None
                fitted.append(axis)
            axes = tuple(fitted)
        return P(*axes)


def state_shardings(state, mesh: Mesh, sharding: ShardingConfig | None = None):
    """``NamedSharding`` for every leaf of an NNX state (real or abstract).

    The result has the structure of ``state``, so it can be passed as
    ``jax.jit(..., in_shardings=...)`` for that state.
    """
    sharding = ShardingConfig() if sharding is None else sharding
    return map_with_param_path(
        lambda path, leaf: NamedSharding(mesh, sharding.partition_spec(path, leaf.shape, mesh)),
        state,
    )


def model_shardings(model: nnx.Module, mesh: Mesh, sharding: ShardingConfig | None = None):
    """``state_shardings`` of ``nnx.state(model)``."""
    return state_shardings(nnx.state(model), mesh, sharding)


def shard_model(model: nnx.Module, mesh: Mesh, sharding: ShardingConfig | None = None):
    """Moves every parameter of ``model`` to its sharding on ``mesh`` (in place).

    Returns ``model`` for chaining. Use ``load_pretrained(mesh=...)`` to load
    straight into the sharding instead.
    """
    state = nnx.state(model)
    nnx.update(model, jax.device_put(state, state_shardings(state, mesh, sharding)))
    return model


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a ``[B, ...]`` input: batch over ``data`` and ``fsdp``."""
    batch_axes = _keep_present_axes(mesh, BATCH_AXES)
    return NamedSharding(mesh, P(batch_axes, *(None,) * (ndim - 1)))


def kv_cache_shardings(cache, mesh: Mesh):
    """Shardings for a ``KVCache``: batch over ``data``/``fsdp``, kv heads over ``tensor``.

    Axes that do not divide their dimension are replicated.
    """
    batch_axes = _keep_present_axes(mesh, BATCH_AXES)
    tensor = _keep_present_axes(mesh, TENSOR)

    def fit(size, axis):
        return None if axis is None or size % _axes_size(mesh, axis) else axis

    _, batch, kv_heads, _, _ = cache.k.shape
    kv_spec = P(None, fit(batch, batch_axes), fit(kv_heads, tensor), None, None)
    return type(cache)(
        k=NamedSharding(mesh, kv_spec),
        v=NamedSharding(mesh, kv_spec),
        valid=NamedSharding(mesh, P(fit(batch, batch_axes), None)),
        index=NamedSharding(mesh, P()),
    )
