"""A preallocated key/value cache for incremental decoding.

The cache is a plain pytree of fixed-shape arrays, so it can be carried
through ``jax.jit``/``jax.lax.while_loop`` and donated:

* ``k``, ``v``: ``[layers, B, kv_heads, max_len, head_dim]`` (heads before
  slots, so attention reads a layer's keys and values without a transpose);
* ``valid``: ``[B, max_len]`` bool, which slots hold real (non-padding)
  tokens. Slots of padding tokens stay ``False`` forever, so a left-padded
  prompt's padding is never attended to;
* ``index``: int32 scalar, the next slot to write. All rows advance together
  (a call with ``T`` tokens writes slots ``index..index+T-1`` of every row);
  per-row progress is ``lengths = valid.sum(-1)``, which is also the position
  of a row's next real token.

Writing past ``max_len`` is not checked inside ``jit``: callers must size the
cache for prompt + generated tokens.
"""

import dataclasses

import jax
import jax.numpy as jnp

from jdistill.models.config import DecoderConfig
from jdistill.models.dtypes import resolve_dtype


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Per-layer keys and values plus slot validity and the write index."""

    k: jnp.ndarray
    v: jnp.ndarray
    valid: jnp.ndarray
    index: jnp.ndarray

    @property
    def max_len(self) -> int:
        """Number of slots per row."""
        return self.k.shape[3]

    @property
    def lengths(self) -> jnp.ndarray:
        """``[B]`` int32: real tokens stored per row."""
        return jnp.sum(self.valid, axis=-1, dtype=jnp.int32)


def init_kv_cache(config: DecoderConfig, batch_size: int, max_len: int, dtype=None) -> KVCache:
    """Returns an empty cache for ``config``.

    Args:
        config: the model's configuration.
        batch_size: rows ``B``.
        max_len: slots per row (prompt plus generated tokens).
        dtype: storage dtype of keys/values; defaults to the compute dtype.
    """
    dtype = resolve_dtype(config.dtype if dtype is None else dtype)
    shape = (config.num_layers, batch_size, config.num_kv_heads, max_len, config.head_dim)
    return KVCache(
        k=jnp.zeros(shape, dtype),
        v=jnp.zeros(shape, dtype),
        valid=jnp.zeros((batch_size, max_len), bool),
        index=jnp.zeros((), jnp.int32),
    )
