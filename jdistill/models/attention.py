"""Multi-head / grouped-query self-attention with optional KV-cache writes."""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from jdistill.models.config import DecoderConfig
from jdistill.models.layers import Linear
from jdistill.models.norms import RMSNorm
from jdistill.models.rope import apply_rope

# Score given to masked keys: finite, so a query with no visible key (a padding
# query) gets a uniform distribution instead of NaNs.
_MASKED_SCORE = float(jnp.finfo(jnp.float32).min)


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
        mask_BxTxS: jnp.ndarray,
        rope=None,
        cache_kv=None,
        output_attentions: bool = False,
    ):
        """Attends from the ``T`` new tokens to the visible keys.

        Args:
            x_BxTxd: normalised block input.
            mask_BxTxS: which keys each query may see (``S = T`` without a
                cache, ``S = max_len`` with one).
            rope: ``(cos_BxTxD, sin_BxTxD)`` tables, or ``None`` for models
                with learned absolute positions.
            cache_kv: ``(k_LxBxKxSxD, v_LxBxKxSxD, layer, index)``: every
                layer's cache, this layer's index into it and the slot at
                which to write the new keys/values. The new entries are
                written into the stacked arrays (in place under ``jit``:
                decoding never copies the whole cache).
            output_attentions: also return the ``[B, H, T, S]`` probabilities.

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
        else:
            k_BxKxSxD = k_BxTxKxD.transpose(0, 2, 1, 3)
            v_BxKxSxD = v_BxTxKxD.transpose(0, 2, 1, 3)

        # Heads-major layouts, so both attention matmuls are plain batched
        # matmuls over (B, K) with no transposes inside the dot.
        groups = h // k_heads
        q_BxKxGxTxD = q_BxTxHxD.reshape(b, t, k_heads, groups, d_head).transpose(0, 2, 3, 1, 4)
        scores_BxKxGxTxS = jnp.einsum(
            "bkgtd,bksd->bkgts",
            q_BxKxGxTxD,
            k_BxKxSxD,
            preferred_element_type=jnp.float32,
        )
        scores_BxKxGxTxS = scores_BxKxGxTxS * self.scale
        scores_BxKxGxTxS = jnp.where(mask_BxTxS[:, None, None], scores_BxKxGxTxS, _MASKED_SCORE)
        probs_BxKxGxTxS = jax.nn.softmax(scores_BxKxGxTxS, axis=-1)
        out_BxKxGxTxD = jnp.einsum(
            "bkgts,bksd->bkgtd", probs_BxKxGxTxS.astype(self.dtype), v_BxKxSxD
        )
        out_BxTxKxGxD = out_BxKxGxTxD.transpose(0, 3, 1, 2, 4)
        out_BxTxd = self.o_proj(out_BxTxKxGxD.reshape(b, t, h * d_head))
        probs = None
        if output_attentions:
            probs = probs_BxKxGxTxS.reshape(b, h, t, probs_BxKxGxTxS.shape[-1])
        return out_BxTxd, new_cache_kv, probs
