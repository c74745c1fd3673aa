"""One pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``.

With ``config.post_norms`` (Gemma 2/3) the attention and MLP outputs are
normalised again before they join the residual stream:
``x + post_norm(attn(norm(x)))`` and ``x + post_norm(mlp(norm(x)))``.
"""

import jax.numpy as jnp
from flax import nnx

from jdistill.models.attention import Attention
from jdistill.models.config import DecoderConfig
from jdistill.models.mlp import MLP
from jdistill.models.norms import make_norm


class DecoderBlock(nnx.Module):
    """A pre-norm decoder block (Llama, Mistral, Qwen, GPT-2; Gemma adds the post-norms)."""

    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        self.attn_norm = make_norm(config, config.hidden_size, rngs=rngs)
        self.attn = Attention(config, rngs=rngs)
        self.mlp_norm = make_norm(config, config.hidden_size, rngs=rngs)
        self.mlp = MLP(config, rngs=rngs)
        if config.post_norms:
            self.attn_post_norm = make_norm(config, config.hidden_size, rngs=rngs)
            self.mlp_post_norm = make_norm(config, config.hidden_size, rngs=rngs)
        else:
            self.attn_post_norm = None
            self.mlp_post_norm = None

    def __call__(
        self,
        x_BxTxd: jnp.ndarray,
        *,
        q_segment_ids_BxT=None,
        kv_segment_ids_BxS=None,
        window: int | None = None,
        window_active=None,
        rope=None,
        cache_kv=None,
        output_attentions: bool = False,
    ):
        """Returns ``(out_BxTxd, new_cache_kv, attention_probs)``; see ``Attention``."""
        attn_out, new_cache_kv, probs = self.attn(
            self.attn_norm(x_BxTxd),
            q_segment_ids_BxT=q_segment_ids_BxT,
            kv_segment_ids_BxS=kv_segment_ids_BxS,
            window=window,
            window_active=window_active,
            rope=rope,
            cache_kv=cache_kv,
            output_attentions=output_attentions,
        )
        if self.attn_post_norm is not None:
            attn_out = self.attn_post_norm(attn_out)
        x_BxTxd = x_BxTxd + attn_out
        mlp_out = self.mlp(self.mlp_norm(x_BxTxd))
        if self.mlp_post_norm is not None:
            mlp_out = self.mlp_post_norm(mlp_out)
        x_BxTxd = x_BxTxd + mlp_out
        return x_BxTxd, new_cache_kv, probs
