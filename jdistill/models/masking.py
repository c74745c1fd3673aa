"""Position ids derived from a padding mask (and segment ids of packed sequences).

Attention itself is computed between *query slots* and *key slots* (see
:mod:`jdistill.models.attention_impl`). Without a KV cache, both are the token
indices ``0..T-1`` of the current input; with a cache, keys live in the
cache's ``max_len`` slots and the ``T`` new queries occupy slots
``index..index+T-1``. A query may attend to a key when the key slot holds a
token of its own segment (padding is a segment of its own), is not in the
future, and (for sliding-window layers) lies within the window. Because
padding is only ever skipped, slot distances equal position distances for the
real tokens of a left- or right-padded row.
"""

import jax
import jax.numpy as jnp


def positions_from_mask(mask_BxT: jnp.ndarray, offset_B: jnp.ndarray | None = None) -> jnp.ndarray:
    """Position ids ``cumsum(mask) - 1`` (clipped at 0), plus ``offset``.

    A left-padded row thus numbers its real tokens ``0, 1, ...`` exactly like
    the unpadded row. ``offset_B`` is the number of real tokens already in a
    KV cache.
    """
    positions_BxT = jnp.cumsum(mask_BxT.astype(jnp.int32), axis=-1) - 1
    if offset_B is not None:
        positions_BxT = positions_BxT + offset_B[:, None].astype(jnp.int32)
    return jnp.maximum(positions_BxT, 0)


def positions_from_segments(mask_BxT: jnp.ndarray, segment_ids_BxT: jnp.ndarray) -> jnp.ndarray:
    """Position ids that restart at 0 at the first real token of every segment.

    For packed sequences: segments are contiguous runs of equal ids; within
    each, the real tokens are numbered ``0, 1, ...`` (padding is skipped and
    gets the position of the previous real token, or 0), exactly as
    :func:`positions_from_mask` numbers each sequence on its own.
    """
    count_BxT = jnp.cumsum(mask_BxT.astype(jnp.int32), axis=-1)
    segment_ids_BxT = jnp.asarray(segment_ids_BxT)
    starts_BxT = jnp.concatenate(
        [jnp.ones_like(segment_ids_BxT[:, :1], bool), segment_ids_BxT[:, 1:] != segment_ids_BxT[:, :-1]], axis=-1
    )
    # Real tokens before each segment's start; the count never decreases, so a
    # running maximum carries it through the segment.
    before_BxT = jax.lax.cummax(jnp.where(starts_BxT, count_BxT - mask_BxT.astype(jnp.int32), 0), axis=1)
    return jnp.maximum(count_BxT - before_BxT - 1, 0)
