"""Multi-head / grouped-query self-attention with optional KV-cache writes.

The projections, norms and rope live here; the attention itself is
:func:`jdistill.models.attention_impl.attend`, whose implementation the config
chooses (``DecoderConfig.attention_impl``).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jdistill.models.attention_impl import attend, resolve_implementation
from jdistill.models.config import DecoderConfig
from jdistill.models.dtypes import resolve_dtype
from jdistill.models.layers import Linear
from jdistill.models.norms import RMSNorm
from jdistill.models.rope import apply_rope

class Attention(nnx.Module):
    """Self-attention with ``H`` query heads sharing ``K`` key/value heads.

    Query head ``h`` uses key/value head ``h // (H // K)`` (the Hugging Face
    grouping). Scores and softmax run in float32.
    """

    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        self.dtype = config.dtype
        self.attention_impl = config.attention_impl
        self.softcap = config.attn_logit_softcap
        self.scale = (
            config.head_dim**-0.5 if config.attention_scale is None else config.attention_scale
        )
        linear = functools.partial(
            Linear,
            init_std=config.init_std,
            param_dtype=config.param_dtype,
            dtype=config.dtype,
            rngs=rngs,
        )
        d = config.hidden_size
        self.q_proj = linear(d, config.q_dim, use_bias=config.qkv_bias)
        self.k_proj = linear(d, config.kv_dim, use_bias=config.qkv_bias)
        self.v_proj = linear(d, config.kv_dim, use_bias=config.qkv_bias)
        self.o_proj = linear(config.q_dim, d, use_bias=config.o_bias)
        if config.qk_norm:
            norm = functools.partial(
                RMSNorm,
                config.head_dim,
                eps=config.norm_eps,
                param_dtype=config.param_dtype,
                dtype=config.dtype,
                rngs=rngs,
                unit_offset=config.norm_unit_offset,
            )
            self.q_norm = norm()
            self.k_norm = norm()
        else:
            self.q_norm = None
            self.k_norm = None

    def __call__(
        self,
        x_BxTxd: jnp.ndarray,
        *,
        q_segment_ids_BxT: jnp.ndarray | None = None,
        kv_segment_ids_BxS: jnp.ndarray | None = None,
        window: int | None = None,
        window_active=None,
        rope=None,
        cache_kv=None,
        output_attentions: bool = False,
    ):
        """Attends from the ``T`` new tokens to the visible keys.

        Which keys a query sees (see :mod:`jdistill.models.attention_impl`):
        keys at earlier or equal slots, of the same segment id (padding carries
        ``PAD_SEGMENT``), within ``window`` slots when a window applies.

        Args:
            x_BxTxd: normalised block input.
            q_segment_ids_BxT, kv_segment_ids_BxS: int32 segment ids of the
                queries and of the key slots (``S = T`` without a cache,
                ``S = max_len`` with one); ``None``: no padding, one segment.
            window: the sliding window ``W`` of this layer, or ``None``.
            window_active: a traced bool when only some layers use the
                window (the scanned layers then pick per layer); ``None`` when
                ``window`` applies as given.
            rope: ``(cos_BxTxD, sin_BxTxD)`` tables, or ``None`` for models
                with learned absolute positions.
            cache_kv: ``(k_LxBxKxSxD, v_LxBxKxSxD, layer, index)``: every
                layer's cache, this layer's index into it and the slot at
                which to write the new keys/values. The new entries are
                written into the stacked arrays (in place under ``jit``:
                decoding never copies the whole cache).
            output_attentions: also return the ``[B, H, T, S]`` probabilities
                (forces the ``'reference'`` implementation).

        Returns:
            ``(out_BxTxd, new_cache_kv, probs)`` where ``new_cache_kv`` is the
            updated stacked ``(k, v)`` pair (or ``None``) and ``probs`` is ``None``
            unless requested.
        """
        b, t, _ = x_BxTxd.shape
        h, k_heads, d_head = self.num_heads, self.num_kv_heads, self.head_dim
        q_BxTxHxD = self.q_proj(x_BxTxd).reshape(b, t, h, d_head)
        k_BxTxKxD = self.k_proj(x_BxTxd).reshape(b, t, k_heads, d_head)
        v_BxTxKxD = self.v_proj(x_BxTxd).reshape(b, t, k_heads, d_head)
        if self.q_norm is not None:
            q_BxTxHxD = self.q_norm(q_BxTxHxD)
            k_BxTxKxD = self.k_norm(k_BxTxKxD)
        if rope is not None:
            cos_BxTxD, sin_BxTxD = rope
            q_BxTxHxD = apply_rope(q_BxTxHxD, cos_BxTxD, sin_BxTxD)
            k_BxTxKxD = apply_rope(k_BxTxKxD, cos_BxTxD, sin_BxTxD)

        new_cache_kv = None
        q_offset = 0
        if cache_kv is not None:
            # The cache is heads-major: only the T new entries are transposed.
            k_all, v_all, layer, index = cache_kv
            start = (layer, 0, 0, index, 0)
            k_new = k_BxTxKxD.transpose(0, 2, 1, 3)[None].astype(k_all.dtype)
            v_new = v_BxTxKxD.transpose(0, 2, 1, 3)[None].astype(v_all.dtype)
            k_all = jax.lax.dynamic_update_slice(k_all, k_new, start)
            v_all = jax.lax.dynamic_update_slice(v_all, v_new, start)
            new_cache_kv = (k_all, v_all)
            k_BxKxSxD = jax.lax.dynamic_index_in_dim(k_all, layer, keepdims=False)
            v_BxKxSxD = jax.lax.dynamic_index_in_dim(v_all, layer, keepdims=False)
            k_BxKxSxD, v_BxKxSxD = k_BxKxSxD.astype(self.dtype), v_BxKxSxD.astype(self.dtype)
            q_offset = index
        else:
            k_BxKxSxD = k_BxTxKxD.transpose(0, 2, 1, 3)
            v_BxKxSxD = v_BxTxKxD.transpose(0, 2, 1, 3)
        q_BxHxTxD = q_BxTxHxD.transpose(0, 2, 1, 3)

        impl = self._implementation(t, cached=cache_kv is not None, output_attentions=output_attentions)

        def run(layer_window):
            return attend(
                q_BxHxTxD,
                k_BxKxSxD,
                v_BxKxSxD,
                scale=self.scale,
                q_segment_ids_BxT=q_segment_ids_BxT,
                kv_segment_ids_BxS=kv_segment_ids_BxS,
                q_offset=q_offset,
                causal=True,
                window=layer_window,
                impl=impl,
                return_probs=output_attentions,
                softcap=self.softcap,
            )

        if isinstance(window_active, (bool, np.bool_)):
            window, window_active = (window if window_active else None), None
        if window is not None and window_active is not None:
            out_BxHxTxD, probs = jax.lax.cond(window_active, lambda: run(window), lambda: run(None))
        else:
            out_BxHxTxD, probs = run(window)
        out_BxTxd = self.o_proj(out_BxHxTxD.transpose(0, 2, 1, 3).reshape(b, t, h * d_head))
        return out_BxTxd, new_cache_kv, probs

    def _implementation(self, num_queries: int, *, cached: bool, output_attentions: bool) -> str:
        """The attention implementation of this call (static).

        ``output_attentions`` needs the probabilities: ``'reference'``. With a
        KV cache, a decode step (``T == 1``) scores one query against the
        cache, ``[B, H, 1, S]``: ``'reference'``; a prefill uses
        ``'xla_chunked'`` (the fused kernels need ``T == S`` without an
        offset) unless ``'reference'`` was asked for.
        """
        if output_attentions:
            return "reference"
        impl = resolve_implementation(
            self.attention_impl, dtype=resolve_dtype(self.dtype), head_dim=self.head_dim, softcap=self.softcap
        )
        if cached and impl != "reference":
            return "reference" if num_queries == 1 else "xla_chunked"
        return impl
