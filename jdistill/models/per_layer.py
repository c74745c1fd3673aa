"""A frozen decoder's parameters with one array per layer instead of stacked ``[L, ...]`` blocks.

The decoder stores its blocks stacked and runs them with ``lax.scan``; each
layer's weights are then sliced out of the stack, and XLA copies every slice
(it has no views). For a model that is trained that is the price of the scan;
for a frozen teacher run forward at every step the copies are pure overhead
(about 150 ms of a 2.9 s GPT-2-medium -> GPT-2-small step on CPU,
docs/benchmarks.md). :class:`PerLayerParams` holds the blocks as ``L``
separate one-layer states, built once; :func:`merge` gives back a model and
the ``block_states`` its forward takes, so the layers run as an unrolled loop
reading their weights in place.

    per_layer = jax.jit(split)(stacked_state)                      # once
    model, blocks = merge(graphdef, per_layer)                     # in the step
    out = model(ids, mask, block_states=blocks)

The model :func:`merge` returns carries only shapes for its stacked blocks:
anything that reads them (a forward without ``block_states``, hidden states
of every layer, attention probabilities) fails loudly while tracing.
"""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

BLOCKS = "blocks"  # the decoder's attribute holding the stacked blocks


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PerLayerParams:
    """A decoder state split into its per-layer blocks and everything else.

    Attributes:
        rest: the state without its ``blocks`` (embeddings, final norm, head).
        blocks: ``L`` one-layer block states, in layer order.
    """

    rest: nnx.State
    blocks: tuple


def split(state: nnx.State) -> PerLayerParams:
    """``state`` (a decoder's, stacked blocks) as :class:`PerLayerParams` (copies: jit it, drop the stacked state)."""
    stacked = state[BLOCKS]
    num_layers = jax.tree.leaves(stacked)[0].shape[0]
    rest = nnx.State({key: value for key, value in state.items() if key != BLOCKS})
    blocks = tuple(jax.tree.map(lambda x, layer=layer: x[layer], stacked) for layer in range(num_layers))
    return PerLayerParams(rest=rest, blocks=blocks)


def merge(graphdef, params: PerLayerParams):
    """``(model, block_states)``: call ``model(..., block_states=block_states)``."""
    num_layers = len(params.blocks)
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct((num_layers, *x.shape), x.dtype), params.blocks[0])
    model = nnx.merge(graphdef, nnx.State({**params.rest, BLOCKS: shapes}))
    return model, list(params.blocks)


def shardings(stacked_shardings: nnx.State, num_layers: int) -> PerLayerParams:
    """The :class:`PerLayerParams` shardings of a ``num_layers`` decoder's state, from its stacked shardings.

    Each layer's arrays keep their stacked array's partitioning without its
    leading (layer) dimension.
    """
    stacked = stacked_shardings[BLOCKS]
    rest = nnx.State({key: value for key, value in stacked_shardings.items() if key != BLOCKS})
    one_layer = jax.tree.map(
        lambda s: NamedSharding(s.mesh, PartitionSpec(*tuple(s.spec)[1:])), stacked,
        is_leaf=lambda x: isinstance(x, NamedSharding),
    )
    return PerLayerParams(rest=rest, blocks=(one_layer,) * num_layers)
