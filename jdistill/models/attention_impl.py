r"""Scaled dot-product attention with one interface and one implementation per backend.

Every implementation computes, for query head ``h`` (using key/value head
``h // G`` with ``G = H / K``, the Hugging Face grouping), query ``i`` and key
``j``:

.. math::
    s_{ij} = \text{scale}\; q_i \cdot k_j, \qquad
    o_i = \sum_j \mathrm{softmax}_j\big(s_{ij} \text{ over visible } j\big)\, v_j

with the scores and the softmax in float32. With a logit soft-cap ``c``
(Gemma 2) the scores are ``s_{ij} = c \tanh(\text{scale}\; q_i \cdot k_j / c)``
before the mask; ``reference``, ``xla_chunked`` and ``pallas`` support it,
``cudnn`` does not (``auto`` then never picks it, and asking for it raises).
Which keys a query sees is given without any dense ``[T, S]`` array:

* **slots** -- query ``i`` sits at slot ``q_offset + i`` (``q_offset`` is 0
  without a KV cache, the cache write index with one); key ``j`` at slot ``j``;
* **causal** -- key slot ``<=`` query slot;
* **window** ``W`` -- query slot ``-`` key slot ``< W`` (the ``W`` most recent
  slots, the query's own included);
* **segments** -- ``q_segment_ids[i] == kv_segment_ids[j]``. Packed sequences
  give each sequence its own id (>= 0); padding tokens carry
  :data:`PAD_SEGMENT` (see :func:`segment_ids_from_mask`). A padding query
  therefore attends to the padding keys before it -- its own slot at least --
  so no row is ever empty: every implementation gives the same, finite output
  on *every* row (padding rows included) and no NaN reaches a gradient.

Implementations (``impl``):

* ``'reference'`` -- dense ``[B, H, T, S]`` float32 scores and an explicit
  softmax; the only one that can return the probabilities (feature KD).
  Memory ``O(T S)``.
* ``'xla_chunked'`` -- pure XLA, FlashAttention-2 style: a loop over query
  blocks with an online softmax over key blocks, blocks wholly outside the
  causal/window band skipped, and a ``jax.custom_vjp`` whose backward pass
  recomputes the block scores from the saved log-sum-exp. Forward and
  backward memory are ``O(T)`` (one ``[B, H, block, block]`` tile at a time).
  Runs everywhere; the default on CPU.
* ``'cudnn'`` -- ``jax.nn.dot_product_attention(implementation='cudnn')``
  (cuDNN flash attention; GPU, float16/bfloat16). Padding and segments are
  passed as a boolean ``[B, 1, T, S]`` mask, which cuDNN turns into a bias
  (``O(T S)`` bytes per row, but no float32 ``[B, H, T, S]`` scores); without
  padding or segments no mask is built.
* ``'pallas'`` -- Pallas splash attention for TPU
  (``jax.experimental.pallas.ops.tpu.splash_attention``): block-sparse causal
  / local-window masks, segment ids for padding and packing. Under a mesh set
  with ``jax.set_mesh`` it runs per shard through ``jax.shard_map`` (batch over
  ``data``/``fsdp``, heads over ``tensor``). ``'pallas_interpret'`` runs the
  same kernel in Pallas interpret mode on any backend (tests; slow).
* ``'auto'`` -- ``'pallas'`` on TPU; ``'cudnn'`` on an NVIDIA GPU when the
  compute dtype is float16/bfloat16, ``D`` a multiple of 8 up to 128 and no
  soft-cap is asked for, else ``'xla_chunked'``; ``'xla_chunked'`` on CPU.

``cudnn`` and ``pallas`` serve self-attention without a cache offset
(training, scoring, prompt prefill without a cache); :func:`attend` raises a
clear error otherwise. The decoder picks for itself (see
:func:`jdistill.models.attention.Attention`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

IMPLEMENTATIONS = ("auto", "reference", "xla_chunked", "cudnn", "pallas", "pallas_interpret")
# Segment id of padding tokens (packed sequences use ids >= 0).
PAD_SEGMENT = -1
# Score given to invisible keys: finite, so a fully masked block (or a padded
# block row) gives finite values instead of NaN.
MASKED_SCORE = float(np.finfo(np.float32).min)
# Query and key block of 'xla_chunked' (tokens). The live tile is
# [B, H, block, block] float32: 12.6 MB at B = 1, H = 12.
CHUNK_BLOCK = 512
# Largest splash block (tokens); a multiple of 128 as the TPU kernel needs.
SPLASH_BLOCK = 512
_SPLASH_MIN_BLOCK = 128
_CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


class AttentionImplementationError(ValueError):
    """An attention implementation cannot serve the requested call."""


def segment_ids_from_mask(valid_BxT: Array, segment_ids_BxT: Array | None = None) -> Array:
    """int32 segment ids: ``segment_ids`` (or 0) at real tokens, :data:`PAD_SEGMENT` at padding.

    Args:
        valid_BxT: 1/True at real tokens.
        segment_ids_BxT: optional ids of packed sequences (>= 0).
    """
    ids = jnp.zeros(valid_BxT.shape, jnp.int32) if segment_ids_BxT is None else segment_ids_BxT
    return jnp.where(jnp.asarray(valid_BxT).astype(bool), jnp.asarray(ids, jnp.int32), PAD_SEGMENT)


def resolve_implementation(
    impl: str, *, dtype=None, head_dim: int | None = None, backend: str | None = None, softcap: float | None = None
) -> str:
    """The concrete implementation ``impl`` stands for on ``backend``.

    ``'auto'`` takes cuDNN on a GPU only for float16/bfloat16, head
    dimensions its flash kernel supports (a multiple of 8, at most 128) and no
    logit soft-cap (which cuDNN's kernel lacks).

    Args:
        impl: one of :data:`IMPLEMENTATIONS`.
        dtype: the compute dtype of q/k/v (``'auto'`` needs it on GPU).
        head_dim: ``D`` (``'auto'`` checks it on GPU when given).
        backend: ``'cpu'``, ``'gpu'`` or ``'tpu'``; default ``jax.default_backend()``.
        softcap: the attention logit soft-cap, or ``None``.
    """
    if impl not in IMPLEMENTATIONS:
        raise AttentionImplementationError(
            f"unknown attention implementation {impl!r}; choose one of {list(IMPLEMENTATIONS)}"
        )
    if impl != "auto":
        return impl
    backend = jax.default_backend() if backend is None else backend
    if backend == "tpu":
        return "pallas"
    head_dim_ok = head_dim is None or (head_dim % 8 == 0 and head_dim <= 128)
    cudnn_dtype = dtype is not None and jnp.dtype(dtype) in map(jnp.dtype, _CUDNN_DTYPES)
    if backend in ("gpu", "cuda") and cudnn_dtype and head_dim_ok and softcap is None:
        return "cudnn"
    return "xla_chunked"


def attend(
    q_BxHxTxD: Array,
    k_BxKxSxD: Array,
    v_BxKxSxD: Array,
    *,
    scale: float,
    q_segment_ids_BxT: Array | None = None,
    kv_segment_ids_BxS: Array | None = None,
    q_offset=0,
    causal: bool = True,
    window: int | None = None,
    impl: str = "auto",
    return_probs: bool = False,
    block_size: int | None = None,
    softcap: float | None = None,
):
    """Attention of ``T`` queries over ``S`` keys; see the module docstring for the mask.

    Args:
        q_BxHxTxD: queries, heads-major.
        k_BxKxSxD, v_BxKxSxD: keys and values (``H`` a multiple of ``K``).
        scale: score multiplier (usually ``D ** -0.5``).
        q_segment_ids_BxT, kv_segment_ids_BxS: int segment ids (both or
            neither; :data:`PAD_SEGMENT` marks padding). ``None``: all tokens
            real, one segment.
        q_offset: slot of the first query (an int, or a traced int32 scalar
            with a KV cache).
        causal: hide keys at later slots.
        window: sliding window ``W`` (needs ``causal``), or ``None``.
        impl: one of :data:`IMPLEMENTATIONS`.
        return_probs: also return the ``[B, H, T, S]`` float32 probabilities
            (``'reference'`` only).
        block_size: block of ``'xla_chunked'`` / ``'pallas'`` (default
            :data:`CHUNK_BLOCK` / :data:`SPLASH_BLOCK`).
        softcap: logit soft-cap ``c``: scores become ``c tanh(s / c)`` before
            the mask (``None``: none). Not with ``'cudnn'``.

    Returns:
        ``(out_BxHxTxD, probs_BxHxTxS or None)``; ``out`` has ``q``'s dtype.
    """
    b, h, t, d = q_BxHxTxD.shape
    bk, k_heads, s, dk = k_BxKxSxD.shape
    if k_BxKxSxD.shape != v_BxKxSxD.shape or bk != b or dk != d or h % k_heads:
        raise AttentionImplementationError(
            f"attend: q {q_BxHxTxD.shape}, k {k_BxKxSxD.shape}, v {v_BxKxSxD.shape} must be "
            "[B, H, T, D], [B, K, S, D], [B, K, S, D] with H a multiple of K"
        )
    if (q_segment_ids_BxT is None) != (kv_segment_ids_BxS is None):
        raise AttentionImplementationError("attend: give both q_segment_ids_BxT and kv_segment_ids_BxS, or neither")
    if q_segment_ids_BxT is not None and (
        q_segment_ids_BxT.shape != (b, t) or kv_segment_ids_BxS.shape != (b, s)
    ):
        raise AttentionImplementationError(
            f"attend: segment ids {q_segment_ids_BxT.shape}, {kv_segment_ids_BxS.shape} must be "
            f"[B, T] = {(b, t)} and [B, S] = {(b, s)}"
        )
    if window is not None and (not causal or int(window) < 1):
        raise AttentionImplementationError(f"attend: a window ({window}) needs causal=True and W >= 1")
    if softcap is not None:
        if not float(softcap) > 0:
            raise AttentionImplementationError(f"attend: softcap must be positive or None, got {softcap!r}")
        softcap = float(softcap)
    impl = resolve_implementation(impl, dtype=q_BxHxTxD.dtype, head_dim=d, softcap=softcap)
    if softcap is not None and impl == "cudnn":
        raise AttentionImplementationError(
            "attention impl 'cudnn' does not support attention logit soft-capping (Gemma 2's "
            "attn_logit_softcap); use 'auto' (which then picks 'xla_chunked' on GPU), 'xla_chunked' or 'reference'"
        )
    if return_probs and impl != "reference":
        raise AttentionImplementationError(
            f"attend: only 'reference' returns attention probabilities, not {impl!r}"
        )
    if impl == "reference":
        return reference_attention(
            q_BxHxTxD, k_BxKxSxD, v_BxKxSxD, scale=scale, q_segment_ids_BxT=q_segment_ids_BxT,
            kv_segment_ids_BxS=kv_segment_ids_BxS, q_offset=q_offset, causal=causal, window=window,
            return_probs=return_probs, softcap=softcap,
        )
    if impl == "xla_chunked":
        out = chunked_attention(
            q_BxHxTxD, k_BxKxSxD, v_BxKxSxD, scale=scale, q_segment_ids_BxT=q_segment_ids_BxT,
            kv_segment_ids_BxS=kv_segment_ids_BxS, q_offset=q_offset, causal=causal, window=window,
            block_size=CHUNK_BLOCK if block_size is None else block_size, softcap=softcap,
        )
        return out, None
    _check_self_attention(impl, t, s, q_offset)
    if impl == "cudnn":
        backend = jax.default_backend()
        if backend not in ("gpu", "cuda"):
            raise AttentionImplementationError(
                f"attention impl 'cudnn' needs an NVIDIA GPU, the backend is {backend!r}; "
                "use 'auto' or 'xla_chunked'"
            )
        if jnp.dtype(q_BxHxTxD.dtype) not in map(jnp.dtype, _CUDNN_DTYPES):
            raise AttentionImplementationError(
                f"attention impl 'cudnn' needs float16/bfloat16 activations, got {q_BxHxTxD.dtype}; "
                "use a bfloat16 compute dtype, or 'auto' (which falls back to 'xla_chunked')"
            )
        out = dot_product_attention(
            q_BxHxTxD, k_BxKxSxD, v_BxKxSxD, scale=scale, q_segment_ids_BxT=q_segment_ids_BxT,
            kv_segment_ids_BxS=kv_segment_ids_BxS, causal=causal, window=window, implementation="cudnn",
        )
        return out, None
    # pallas / pallas_interpret
    interpret = impl == "pallas_interpret"
    if not interpret and jax.default_backend() != "tpu":
        raise AttentionImplementationError(
            f"attention impl 'pallas' (splash attention) needs a TPU, the backend is "
            f"{jax.default_backend()!r}; use 'auto', 'xla_chunked', or 'pallas_interpret' (slow, for tests)"
        )
    out = splash_attention(
        q_BxHxTxD, k_BxKxSxD, v_BxKxSxD, scale=scale, q_segment_ids_BxT=q_segment_ids_BxT,
        kv_segment_ids_BxS=kv_segment_ids_BxS, causal=causal, window=window, interpret=interpret,
        block_size=SPLASH_BLOCK if block_size is None else block_size, softcap=softcap,
    )
    return out, None


def _check_self_attention(impl: str, t: int, s: int, q_offset) -> None:
    static_zero = isinstance(q_offset, (int, np.integer)) and int(q_offset) == 0
    if t != s or not static_zero:
        raise AttentionImplementationError(
            f"attention impl {impl!r} serves self-attention over the same T tokens only "
            f"(got T={t}, S={s}, q_offset={q_offset!r}); KV-cache calls use 'reference' or 'xla_chunked'"
        )


# ----------------------------------------------------------------------------
# The mask, evaluated on a tile of query and key slots.


def visible(
    q_slots_T: Array,
    k_slots_S: Array,
    q_segment_ids_BxT: Array | None,
    kv_segment_ids_BxS: Array | None,
    *,
    causal: bool,
    window: int | None,
) -> Array:
    """Boolean ``[B or 1, T, S]``: may the query at ``q_slots[i]`` see the key at ``k_slots[j]``?"""
    ok_TxS = jnp.ones((q_slots_T.shape[0], k_slots_S.shape[0]), bool)
    distance_TxS = q_slots_T[:, None] - k_slots_S[None, :]
    if causal:
        ok_TxS = distance_TxS >= 0
    if window is not None:
        ok_TxS = ok_TxS & (distance_TxS < window)
    if q_segment_ids_BxT is None:
        return ok_TxS[None]
    same_BxTxS = q_segment_ids_BxT[:, :, None] == kv_segment_ids_BxS[:, None, :]
    return ok_TxS[None] & same_BxTxS


def _grouped(q_BxHxTxD: Array, k_heads: int) -> Array:
    b, h, t, d = q_BxHxTxD.shape
    return q_BxHxTxD.reshape(b, k_heads, h // k_heads, t, d)


# ----------------------------------------------------------------------------
# 'reference': dense scores.


def reference_attention(
    q_BxHxTxD: Array,
    k_BxKxSxD: Array,
    v_BxKxSxD: Array,
    *,
    scale: float,
    q_segment_ids_BxT: Array | None = None,
    kv_segment_ids_BxS: Array | None = None,
    q_offset=0,
    causal: bool = True,
    window: int | None = None,
    return_probs: bool = False,
    softcap: float | None = None,
):
    """Dense attention: ``softmax(where(mask, cap(scale q k^T), MIN)) v`` in float32.

    ``cap(s)`` is ``softcap * tanh(s / softcap)``, or ``s`` without a soft-cap.
    Returns ``(out_BxHxTxD, probs_BxHxTxS or None)``.
    """
    b, h, t, d = q_BxHxTxD.shape
    k_heads, s = k_BxKxSxD.shape[1], k_BxKxSxD.shape[2]
    q_BxKxGxTxD = _grouped(q_BxHxTxD, k_heads)
    scores_BxKxGxTxS = jnp.einsum(
        "bkgtd,bksd->bkgts", q_BxKxGxTxD, k_BxKxSxD, preferred_element_type=jnp.float32
    ) * scale
    if softcap is not None:
        scores_BxKxGxTxS = jnp.tanh(scores_BxKxGxTxS / softcap) * softcap
    q_slots_T = q_offset + jnp.arange(t, dtype=jnp.int32)
    mask_BxTxS = visible(
        q_slots_T, jnp.arange(s, dtype=jnp.int32), q_segment_ids_BxT, kv_segment_ids_BxS,
        causal=causal, window=window,
    )
    scores_BxKxGxTxS = jnp.where(mask_BxTxS[:, None, None], scores_BxKxGxTxS, MASKED_SCORE)
    probs_BxKxGxTxS = jax.nn.softmax(scores_BxKxGxTxS, axis=-1)
    out_BxKxGxTxD = jnp.einsum("bkgts,bksd->bkgtd", probs_BxKxGxTxS.astype(v_BxKxSxD.dtype), v_BxKxSxD)
    out_BxHxTxD = out_BxKxGxTxD.reshape(b, h, t, d).astype(q_BxHxTxD.dtype)
    probs = probs_BxKxGxTxS.reshape(b, h, t, s) if return_probs else None
    return out_BxHxTxD, probs


# ----------------------------------------------------------------------------
# 'xla_chunked': online softmax over key blocks, custom VJP.


def chunked_attention(
    q_BxHxTxD: Array,
    k_BxKxSxD: Array,
    v_BxKxSxD: Array,
    *,
    scale: float,
    q_segment_ids_BxT: Array | None = None,
    kv_segment_ids_BxS: Array | None = None,
    q_offset=0,
    causal: bool = True,
    window: int | None = None,
    block_size: int = CHUNK_BLOCK,
    softcap: float | None = None,
) -> Array:
    r"""Memory-efficient attention in pure XLA (FlashAttention-2's algorithm).

    For each query block (a ``lax.map``) a ``fori_loop`` runs over the key
    blocks that intersect the causal/window band and keeps the running
    maximum ``m``, normaliser ``l`` and unnormalised output ``a``:

    .. math::
        m' = \max(m, \max_j s_{ij}),\quad
        l' = e^{m - m'} l + \sum_j e^{s_{ij} - m'},\quad
        a' = e^{m - m'} a + \sum_j e^{s_{ij} - m'} v_j

    then ``o = a / l`` and the log-sum-exp ``L = m + \log l`` is saved. The
    backward pass loops the same way and rebuilds ``P = e^{s - L}``:
    ``dV += P^T dO``, ``dS = P (dO V^T - \mathrm{rowsum}(dO \circ O))``,
    ``dQ += \text{scale}\, dS K``, ``dK += \text{scale}\, dS^T Q``.
    Residuals are ``q, k, v, o, L``: memory is linear in ``T``. With a
    soft-cap ``c`` the tiles hold ``c \tanh(s / c)`` and ``dS`` is multiplied
    by its derivative ``1 - \tanh^2(s / c)``.

    ``T`` and ``S`` are padded up to whole blocks (padded keys are hidden,
    padded query rows dropped). Returns ``out_BxHxTxD`` in ``q``'s dtype.
    """
    b, h, t, d = q_BxHxTxD.shape
    k_heads, s = k_BxKxSxD.shape[1], k_BxKxSxD.shape[2]
    block_q = min(block_size, t)
    block_k = min(block_size, s)
    t_pad = -(-t // block_q) * block_q
    s_pad = -(-s // block_k) * block_k
    if q_segment_ids_BxT is None and (s_pad != s and not causal):
        # Padded keys must be hidden: give the real tokens a segment of their own.
        q_segment_ids_BxT = jnp.zeros((b, t), jnp.int32)
        kv_segment_ids_BxS = jnp.zeros((b, s), jnp.int32)
    q_BxKxGxTxD = _grouped(q_BxHxTxD, k_heads)
    q_BxKxGxTxD = _pad_axis(q_BxKxGxTxD, 3, t_pad)
    k_BxKxSxD = _pad_axis(k_BxKxSxD, 2, s_pad)
    v_BxKxSxD = _pad_axis(v_BxKxSxD, 2, s_pad)
    if q_segment_ids_BxT is not None:
        q_segment_ids_BxT = _pad_axis(q_segment_ids_BxT.astype(jnp.int32), 1, t_pad, PAD_SEGMENT)
        # Padded keys get an id no query has.
        kv_segment_ids_BxS = _pad_axis(kv_segment_ids_BxS.astype(jnp.int32), 1, s_pad, PAD_SEGMENT - 1)
    q_offset = jnp.asarray(q_offset, jnp.int32)
    fn = _chunked_fn(
        float(scale), bool(causal), None if window is None else int(window), block_q, block_k,
        None if softcap is None else float(softcap),
    )
    out_BxKxGxTxD = fn(q_BxKxGxTxD, k_BxKxSxD, v_BxKxSxD, q_segment_ids_BxT, kv_segment_ids_BxS, q_offset)
    return out_BxKxGxTxD[:, :, :, :t].reshape(b, h, t, d)


def _pad_axis(x: Array, axis: int, size: int, value=0) -> Array:
    if x.shape[axis] == size:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths, constant_values=value)


def _key_block_range(q_start, block_q: int, block_k: int, num_k_blocks: int, causal: bool, window):
    """Key blocks ``[lo, hi)`` that can hold a visible key for queries at slots ``q_start .. q_start+block_q-1``."""
    lo = jnp.int32(0)
    hi = jnp.int32(num_k_blocks)
    if causal:
        hi = jnp.clip((q_start + block_q - 1) // block_k + 1, 0, num_k_blocks)
    if window is not None:
        lo = jnp.clip((q_start - window + 1) // block_k, 0, num_k_blocks)
    return lo, hi


@functools.lru_cache(maxsize=64)
def _chunked_fn(scale: float, causal: bool, window: int | None, block_q: int, block_k: int, softcap: float | None):
    """The custom-VJP kernel for one static configuration.

    Arguments: ``q_BxKxGxTxD, k_BxKxSxD, v_BxKxSxD`` (T, S multiples of the
    blocks), segment ids (or None) and the int32 ``q_offset``.
    """

    def tile(q_tile, k_BxKxSxD, v_BxKxSxD, q_seg_tile, kv_seg, q_start, j):
        """Masked float32 scores of one (query block, key block) tile, its key/value block and,
        with a soft-cap, ``d cap(s) / ds`` on the tile (else ``None``)."""
        k_block = jax.lax.dynamic_slice_in_dim(k_BxKxSxD, j * block_k, block_k, axis=2)
        v_block = jax.lax.dynamic_slice_in_dim(v_BxKxSxD, j * block_k, block_k, axis=2)
        s_tile = jnp.einsum("bkgtd,bksd->bkgts", q_tile, k_block, preferred_element_type=jnp.float32) * scale
        cap_grad = None
        if softcap is not None:
            tanh_tile = jnp.tanh(s_tile / softcap)
            s_tile = tanh_tile * softcap
            cap_grad = 1.0 - tanh_tile * tanh_tile
        kv_seg_block = None
        if kv_seg is not None:
            kv_seg_block = jax.lax.dynamic_slice_in_dim(kv_seg, j * block_k, block_k, axis=1)
        q_slots = q_start + jnp.arange(block_q, dtype=jnp.int32)
        k_slots = j * block_k + jnp.arange(block_k, dtype=jnp.int32)
        mask = visible(q_slots, k_slots, q_seg_tile, kv_seg_block, causal=causal, window=window)
        return jnp.where(mask[:, None, None], s_tile, MASKED_SCORE), k_block, v_block, cap_grad

    def q_blocks(x, axis):
        """``[..., T, ...] -> [nq, ..., block_q, ...]`` along ``axis``."""
        n = x.shape[axis] // block_q
        x = x.reshape(x.shape[:axis] + (n, block_q) + x.shape[axis + 1 :])
        return jnp.moveaxis(x, axis, 0)

    def q_unblocks(x, axis):
        x = jnp.moveaxis(x, 0, axis)
        return x.reshape(x.shape[:axis] + (x.shape[axis] * x.shape[axis + 1],) + x.shape[axis + 2 :])

    def forward(q, k, v, q_seg, kv_seg, q_offset):
        num_k_blocks = k.shape[2] // block_k
        b, kh, g, _, d = q.shape

        def one_q_block(xs):
            i, q_tile, q_seg_tile = xs
            q_start = q_offset + i * block_q
            lo, hi = _key_block_range(q_start, block_q, block_k, num_k_blocks, causal, window)

            def body(j, carry):
                m, l, acc = carry
                s_tile, _, v_block, _ = tile(q_tile, k, v, q_seg_tile, kv_seg, q_start, j)
                m_new = jnp.maximum(m, jnp.max(s_tile, axis=-1))
                p = jnp.exp(s_tile - m_new[..., None])
                correction = jnp.exp(m - m_new)
                l = l * correction + jnp.sum(p, axis=-1)
                acc = acc * correction[..., None] + jnp.einsum(
                    "bkgts,bksd->bkgtd", p.astype(v.dtype), v_block, preferred_element_type=jnp.float32
                )
                return m_new, l, acc

            init = (
                jnp.full((b, kh, g, block_q), MASKED_SCORE, jnp.float32),
                jnp.zeros((b, kh, g, block_q), jnp.float32),
                jnp.zeros((b, kh, g, block_q, d), jnp.float32),
            )
            m, l, acc = jax.lax.fori_loop(lo, hi, body, init)
            safe_l = jnp.where(l > 0, l, 1.0)
            out = (acc / safe_l[..., None]).astype(q.dtype)
            lse = jnp.where(l > 0, m + jnp.log(safe_l), 0.0)
            return out, lse

        num_q_blocks = q.shape[3] // block_q
        q_seg_blocks = None if q_seg is None else q_blocks(q_seg, 1)
        out_blocks, lse_blocks = jax.lax.map(
            one_q_block, (jnp.arange(num_q_blocks, dtype=jnp.int32), q_blocks(q, 3), q_seg_blocks)
        )
        return q_unblocks(out_blocks, 3), q_unblocks(lse_blocks, 3)

    @jax.custom_vjp
    def attention(q, k, v, q_seg, kv_seg, q_offset):
        return forward(q, k, v, q_seg, kv_seg, q_offset)[0]

    def attention_fwd(q, k, v, q_seg, kv_seg, q_offset):
        out, lse = forward(q, k, v, q_seg, kv_seg, q_offset)
        return out, (q, k, v, q_seg, kv_seg, q_offset, out, lse)

    def attention_bwd(residuals, d_out):
        q, k, v, q_seg, kv_seg, q_offset, out, lse = residuals
        num_k_blocks = k.shape[2] // block_k
        num_q_blocks = q.shape[3] // block_q
        # delta_i = rowsum(dO_i * O_i)
        delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)

        def one_q_block(carry, xs):
            dk_acc, dv_acc = carry
            i, q_tile, do_tile, lse_tile, delta_tile, q_seg_tile = xs
            q_start = q_offset + i * block_q
            lo, hi = _key_block_range(q_start, block_q, block_k, num_k_blocks, causal, window)

            def body(j, inner):
                dq_tile, dk_acc, dv_acc = inner
                s_tile, k_block, v_block, cap_grad = tile(q_tile, k, v, q_seg_tile, kv_seg, q_start, j)
                p = jnp.exp(s_tile - lse_tile[..., None])
                dv_block = jnp.einsum(
                    "bkgts,bkgtd->bksd", p.astype(do_tile.dtype), do_tile, preferred_element_type=jnp.float32
                )
                dp = jnp.einsum("bkgtd,bksd->bkgts", do_tile, v_block, preferred_element_type=jnp.float32)
                ds = p * (dp - delta_tile[..., None]) * scale
                if cap_grad is not None:
                    ds = ds * cap_grad
                dq_tile = dq_tile + jnp.einsum(
                    "bkgts,bksd->bkgtd", ds.astype(k.dtype), k_block, preferred_element_type=jnp.float32
                )
                dk_block = jnp.einsum(
                    "bkgts,bkgtd->bksd", ds.astype(q.dtype), q_tile, preferred_element_type=jnp.float32
                )
                start = j * block_k
                dk_acc = jax.lax.dynamic_update_slice_in_dim(
                    dk_acc, jax.lax.dynamic_slice_in_dim(dk_acc, start, block_k, axis=2) + dk_block, start, axis=2
                )
                dv_acc = jax.lax.dynamic_update_slice_in_dim(
                    dv_acc, jax.lax.dynamic_slice_in_dim(dv_acc, start, block_k, axis=2) + dv_block, start, axis=2
                )
                return dq_tile, dk_acc, dv_acc

            dq_tile = jnp.zeros(q_tile.shape, jnp.float32)
            dq_tile, dk_acc, dv_acc = jax.lax.fori_loop(lo, hi, body, (dq_tile, dk_acc, dv_acc))
            return (dk_acc, dv_acc), dq_tile.astype(q.dtype)

        q_seg_blocks = None if q_seg is None else q_blocks(q_seg, 1)
        xs = (
            jnp.arange(num_q_blocks, dtype=jnp.int32),
            q_blocks(q, 3),
            q_blocks(d_out, 3),
            q_blocks(lse, 3),
            q_blocks(delta, 3),
            q_seg_blocks,
        )
        init = (jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32))
        (dk, dv), dq_blocks = jax.lax.scan(one_q_block, init, xs)
        dq = q_unblocks(dq_blocks, 3)
        return dq, dk.astype(k.dtype), dv.astype(v.dtype), None, None, None

    attention.defvjp(attention_fwd, attention_bwd)
    return attention


# ----------------------------------------------------------------------------
# 'cudnn': jax.nn.dot_product_attention.


def dot_product_attention(
    q_BxHxTxD: Array,
    k_BxKxSxD: Array,
    v_BxKxSxD: Array,
    *,
    scale: float,
    q_segment_ids_BxT: Array | None = None,
    kv_segment_ids_BxS: Array | None = None,
    causal: bool = True,
    window: int | None = None,
    implementation: str = "cudnn",
) -> Array:
    """Self-attention through ``jax.nn.dot_product_attention`` (``implementation='cudnn'`` on GPU).

    The window ``W`` maps to ``local_window_size=(W - 1, 0)``; segments and
    padding to a boolean ``[B, 1, T, S]`` mask (none without them).
    ``implementation='xla'`` runs the same mapping anywhere (tests).
    Returns ``out_BxHxTxD``.
    """
    mask_Bx1xTxS = None
    if q_segment_ids_BxT is not None:
        mask_Bx1xTxS = (q_segment_ids_BxT[:, :, None] == kv_segment_ids_BxS[:, None, :])[:, None]
    out_BxTxHxD = jax.nn.dot_product_attention(
        q_BxHxTxD.transpose(0, 2, 1, 3),
        k_BxKxSxD.transpose(0, 2, 1, 3),
        v_BxKxSxD.transpose(0, 2, 1, 3),
        mask=mask_Bx1xTxS,
        scale=scale,
        is_causal=causal,
        local_window_size=None if window is None else (int(window) - 1, 0),
        implementation=implementation,
    )
    return out_BxTxHxD.transpose(0, 2, 1, 3)


# ----------------------------------------------------------------------------
# 'pallas': splash attention (TPU), or its interpret mode anywhere.


def splash_attention(
    q_BxHxTxD: Array,
    k_BxKxSxD: Array,
    v_BxKxSxD: Array,
    *,
    scale: float,
    q_segment_ids_BxT: Array | None = None,
    kv_segment_ids_BxS: Array | None = None,
    causal: bool = True,
    window: int | None = None,
    interpret: bool = False,
    block_size: int = SPLASH_BLOCK,
    softcap: float | None = None,
) -> Array:
    """Self-attention through Pallas splash attention (``T == S``).

    ``T`` is padded to a whole number of blocks (a multiple of 128); padded
    queries are dropped and padded keys lie in every real query's future (or,
    without ``causal``, in a segment of their own). Queries are multiplied by
    ``scale`` first (the kernel has no scale); ``softcap`` is the kernel's
    ``attn_logits_soft_cap``. With a context mesh
    (``jax.set_mesh``) the kernel runs per shard under ``jax.shard_map``:
    batch over the ``data``/``fsdp`` axes and heads over ``tensor`` when they
    divide. Returns ``out_BxHxTxD``.
    """
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    b, h, t, d = q_BxHxTxD.shape
    k_heads = k_BxKxSxD.shape[1]
    block = min(block_size, -(-t // _SPLASH_MIN_BLOCK) * _SPLASH_MIN_BLOCK)
    t_pad = -(-t // block) * block
    if q_segment_ids_BxT is None and t_pad != t and not causal:
        q_segment_ids_BxT = jnp.zeros((b, t), jnp.int32)
        kv_segment_ids_BxS = jnp.zeros((b, t), jnp.int32)
    q_BxHxTxD = _pad_axis((q_BxHxTxD * jnp.asarray(scale, q_BxHxTxD.dtype)).astype(q_BxHxTxD.dtype), 2, t_pad)
    k_BxKxSxD = _pad_axis(k_BxKxSxD, 2, t_pad)
    v_BxKxSxD = _pad_axis(v_BxKxSxD, 2, t_pad)
    if q_segment_ids_BxT is not None:
        # Padded tokens form a segment of their own: they see one another, never a real token.
        q_segment_ids_BxT = _pad_axis(q_segment_ids_BxT.astype(jnp.int32), 1, t_pad, PAD_SEGMENT - 1)
        kv_segment_ids_BxS = _pad_axis(kv_segment_ids_BxS.astype(jnp.int32), 1, t_pad, PAD_SEGMENT - 1)

    mesh = jax.sharding.get_abstract_mesh()
    batch_axes = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names and mesh.shape[a] > 1)
    batch_shards = math.prod(mesh.shape[a] for a in batch_axes) if batch_axes else 1
    head_axis = "tensor" if "tensor" in mesh.axis_names and mesh.shape["tensor"] > 1 else None
    head_shards = mesh.shape[head_axis] if head_axis else 1
    if batch_shards > 1 and b % batch_shards:
        batch_axes, batch_shards = (), 1
    if head_shards > 1 and (h % head_shards or k_heads % head_shards):
        head_axis, head_shards = None, 1

    kernel = _splash_kernel(h // head_shards, t_pad, causal, window, block, interpret, softcap)

    def run(kernel, q, k, v, q_seg, kv_seg):
        segments = None if q_seg is None else splash.SegmentIds(q=q_seg, kv=kv_seg)
        if segments is None:
            return jax.vmap(lambda q1, k1, v1: kernel(q1, k1, v1))(q, k, v)
        return jax.vmap(kernel)(q, k, v, segments)

    if batch_shards * head_shards == 1:
        out = run(kernel, q_BxHxTxD, k_BxKxSxD, v_BxKxSxD, q_segment_ids_BxT, kv_segment_ids_BxS)
    else:
        batch_spec = batch_axes if batch_axes else None
        qkv_spec = jax.P(batch_spec, head_axis, None, None)
        seg_spec = None if q_segment_ids_BxT is None else jax.P(batch_spec, None)
        operands = (q_BxHxTxD, k_BxKxSxD, v_BxKxSxD, q_segment_ids_BxT, kv_segment_ids_BxS)
        specs = (qkv_spec, qkv_spec, qkv_spec, seg_spec, seg_spec)
        if mesh._any_axis_explicit:
            # Explicit axes: shard_map takes its inputs exactly in its specs.
            operands = tuple(
                x if x is None else jax.sharding.reshard(x, spec) for x, spec in zip(operands, specs, strict=True)
            )
        # The kernel (a pytree of mask metadata) is an argument, replicated:
        # shard_map cannot close over arrays typed with Explicit axes.
        out = jax.shard_map(
            run,
            mesh=mesh,
            in_specs=(jax.P(), *specs),
            out_specs=qkv_spec,
            check_vma=False,
        )(kernel, *operands)
    return out[:, :, :t]


@functools.lru_cache(maxsize=32)
def _splash_kernel(
    num_heads: int, length: int, causal: bool, window: int | None, block: int, interpret: bool,
    softcap: float | None = None,
):
    """A splash-attention kernel for ``[num_heads, length, D]`` inputs (host-side mask processing, cached)."""
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    shape = (length, length)
    if window is not None:
        head_mask = splash.LocalMask(shape, window_size=(window - 1, 0), offset=0)
    elif causal:
        head_mask = splash.CausalMask(shape)
    else:
        head_mask = splash.FullMask(shape)
    sizes = splash.BlockSizes(
        block_q=block, block_kv=block, block_kv_compute=block,
        block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
        block_q_dq=block, block_kv_dq=block,
    )
    # The mask metadata must be concrete arrays even when first built inside a trace (it is cached).
    with jax.ensure_compile_time_eval():
        return splash.make_splash_mha(
            splash.MultiHeadMask([head_mask] * num_heads),
            block_sizes=sizes,
            head_shards=1,
            q_seq_shards=1,
            interpret=interpret,
            attn_logits_soft_cap=softcap,
        )
