"""One pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

import jax.numpy as jnp
from flax import nnx

from jdistill.models.attention import Attention
from jdistill.models.config import DecoderConfig
from jdistill.models.mlp import MLP
from jdistill.models.norms import make_norm


class DecoderBlock(nnx.Module):
    """A pre-norm decoder block (Llama, Mistral, Qwen and GPT-2 all use this)."""

    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        self.attn_norm = make_norm(config, config.hidden_size, rngs=rngs)
        self.attn = Attention(config, rngs=rngs)
        self.mlp_norm = make_norm(config, config.hidden_size, rngs=rngs)
        self.mlp = MLP(config, rngs=rngs)

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
        x_BxTxd = x_BxTxd + attn_out
        x_BxTxd = x_BxTxd + self.mlp(self.mlp_norm(x_BxTxd))
        return x_BxTxd, new_cache_kv, probs
