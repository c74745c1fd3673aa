"""Positions and attention masks derived from a padding mask.

Attention is computed between *query slots* and *key slots*. Without a KV
cache, both are the token indices ``0..T-1`` of the current input; with a
cache, keys live in the cache's ``max_len`` slots and the ``T`` new queries
occupy slots ``index..index+T-1``. A query may attend to a key when the key
slot holds a real (non-padding) token, is not in the future, and (for
sliding-window layers) lies within the window. Because padding is only ever
skipped, slot distances equal position distances for the real tokens of a
left- or right-padded row.
"""

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


def attention_masks(
    key_valid_BxS: jnp.ndarray,
    query_start,
    num_queries: int,
    sliding_window: int | None,
):
    """Boolean ``[B, T, S]`` masks of the keys each query may attend to.

    Args:
        key_valid_BxS: which key slots hold real tokens.
        query_start: slot of the first query (0 without a cache; a traced
            scalar with one).
        num_queries: ``T``.
        sliding_window: window size, or ``None``.

    Returns:
        ``(full_BxTxS, windowed_BxTxS)``; ``windowed`` is ``None`` when there
        is no window.
    """
    num_keys = key_valid_BxS.shape[-1]
    query_slot_T = query_start + jnp.arange(num_queries, dtype=jnp.int32)
    key_slot_S = jnp.arange(num_keys, dtype=jnp.int32)
    causal_TxS = key_slot_S[None, :] <= query_slot_T[:, None]
    full_BxTxS = causal_TxS[None] & key_valid_BxS[:, None, :].astype(bool)
    if sliding_window is None:
        return full_BxTxS, None
    in_window_TxS = query_slot_T[:, None] - key_slot_S[None, :] < sliding_window
    return full_BxTxS, full_BxTxS & in_window_TxS[None]
