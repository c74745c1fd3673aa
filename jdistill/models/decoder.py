"""The jdistill decoder: embed -> scanned blocks -> final norm -> LM head.

One :class:`Decoder` class serves every family; families differ only in their
:class:`~jdistill.models.config.DecoderConfig`. The blocks are created with
``nnx.vmap`` so each block parameter carries a leading ``[num_layers]`` axis,
and the forward pass runs them with a single ``jax.lax.scan``: the traced
program (and so compile time) does not grow with depth.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jdistill.models.block import DecoderBlock
from jdistill.models.config import DecoderConfig
from jdistill.models.dtypes import resolve_dtype
from jdistill.models.kv_cache import KVCache, init_kv_cache
from jdistill.models.layers import Embed, Linear, soft_cap
from jdistill.models.attention_impl import segment_ids_from_mask
from jdistill.models.masking import positions_from_mask, positions_from_segments
from jdistill.models.norms import make_norm
from jdistill.models.output import DecoderOutput
from jdistill.models.remat import apply_remat
from jdistill.models.rope import inverse_frequencies, rope_tables
from jdistill.models.sharding import ShardingConfig, shard_model, state_shardings


class Decoder(nnx.Module):
    """A decoder-only causal language model.

    Parameters (paths as in ``nnx.state(model)``):

    * ``embed/embedding`` ``[V, d]``;
    * ``position_embed/embedding`` ``[max_position_embeddings, d]`` (learned
      positions only);
    * ``blocks/...`` every block parameter stacked as ``[L, ...]``:
      ``attn_norm``, ``attn/{q,k,v,o}_proj/{kernel,bias}``,
      ``attn/{q,k}_norm/scale``, ``attn_post_norm`` (post-norm models),
      ``mlp_norm``, ``mlp/{gate,up,down}_proj/{kernel,bias}``,
      ``mlp_post_norm`` (post-norm models); kernels are ``[in, out]``;
    * ``final_norm/{scale,bias}``;
    * ``lm_head/kernel`` ``[d, V]`` (untied heads only).
    """

    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embed = Embed(
            config.vocab_size,
            config.hidden_size,
            init_std=config.init_std,
            param_dtype=config.param_dtype,
            dtype=config.dtype,
            rngs=rngs,
        )
        if config.position_embedding == "learned":
            self.position_embed = Embed(
                config.max_position_embeddings,
                config.hidden_size,
                init_std=config.init_std,
                param_dtype=config.param_dtype,
                dtype=config.dtype,
                rngs=rngs,
            )
        else:
            self.position_embed = None

        @nnx.split_rngs(splits=config.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, axis_size=config.num_layers)
        def make_blocks(block_rngs):
            return DecoderBlock(config, rngs=block_rngs)

        self.blocks = make_blocks(rngs)
        self.final_norm = make_norm(config, config.hidden_size, rngs=rngs)
        if config.tie_word_embeddings:
            self.lm_head = None
        else:
            self.lm_head = Linear(
                config.hidden_size,
                config.vocab_size,
                use_bias=False,
                init_std=config.init_std,
                param_dtype=config.param_dtype,
                dtype=config.dtype,
                rngs=rngs,
            )

    # ------------------------------------------------------------------
    # Accessors shared by every family.

    def embedding_table(self) -> jnp.ndarray:
        """The ``[V, d]`` input embedding table (parameter dtype)."""
        return self.embed.embedding[...]

    def lm_head_weight(self) -> jnp.ndarray:
        """The ``[d, V]`` LM head weight: ``logits = hidden_states @ W``.

        For tied embeddings this is ``embedding_table().T``. Models with
        ``config.final_logit_softcap`` soft-cap ``hidden_states @ W`` (see
        :meth:`logits_from_hidden`).
        """
        if self.lm_head is None:
            return self.embed.embedding[...].T
        return self.lm_head.kernel[...]

    def logits_from_hidden(self, hidden_Nxd: jnp.ndarray, dtype=None) -> jnp.ndarray:
        """The LM head on ``[..., d]`` hidden states, as the forward pass computes it.

        Compute-dtype operands, float32 accumulation, then the final-logit
        soft-cap (``config.final_logit_softcap``, in float32); the result is
        cast to ``dtype`` (default the compute dtype).
        """
        config = self.config
        out_dtype = resolve_dtype(config.dtype if dtype is None else dtype)
        head_dxV = self.lm_head_weight().astype(config.dtype)
        logits = jnp.einsum(
            "...d,dv->...v", hidden_Nxd.astype(config.dtype), head_dxV, preferred_element_type=jnp.float32
        )
        return soft_cap(logits, config.final_logit_softcap).astype(out_dtype)

    def init_cache(self, batch_size: int, max_len: int, dtype=None) -> KVCache:
        """An empty :class:`KVCache` for ``batch_size`` rows of ``max_len`` slots."""
        return init_kv_cache(self.config, batch_size, max_len, dtype)

    def unstacked_block_states(self) -> list:
        """Each block's parameters as separate arrays: ``num_layers`` one-layer states.

        Slicing a layer out of the stacked ``[L, ...]`` parameters copies it
        (XLA has no views). A decoding loop slices once, before the loop, and
        passes the result as ``__call__(..., block_states=...)`` so that its
        steps read the weights in place instead of copying every layer's
        weights at every step. The copies double the block weights' memory
        while they live.
        """
        _, state = nnx.split(self.blocks)
        return [
            jax.tree.map(lambda x, layer=layer: x[layer], state)
            for layer in range(self.config.num_layers)
        ]

    # ------------------------------------------------------------------
    # Forward pass.

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        *,
        positions=None,
        segment_ids=None,
        cache: KVCache | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        return_logits: bool = True,
        logits_dtype=None,
        block_states=None,
    ) -> DecoderOutput:
        """Runs the model on ``[B, T]`` token ids.

        Args:
            input_ids: ``[B, T]`` int token ids.
            attention_mask: ``[B, T]``, 1 for real tokens and 0 for padding
                (left or right); ``None`` means no padding. Padding keys are
                never attended to.
            positions: ``[B, T]`` position ids. Default: ``cumsum(mask) - 1``
                clipped at 0, offset by the real tokens already in ``cache``,
                so a padded row gets the same logits as the unpadded one;
                with ``segment_ids``, the count restarts at every segment.
            segment_ids: ``[B, T]`` int ids (>= 0) of packed sequences: a
                token attends only to earlier tokens of its own segment.
                Segments must be contiguous. Not with ``cache``.
            cache: a :class:`KVCache`; the new keys/values are written at
                ``cache.index`` and the updated cache is returned. ``T > 1``
                prefills, ``T == 1`` decodes.
            output_hidden_states: also return every layer's hidden states.
            output_attentions: also return the attention probabilities.
            return_logits: compute the LM head (set ``False`` when a loss uses
                ``hidden_states`` with ``lm_head_weight()`` directly; it must
                then apply ``config.final_logit_softcap`` itself, as the
                fused losses' ``logit_softcap`` argument does).
            logits_dtype: dtype of the logits; default the compute dtype
                (the matmul accumulates in float32 either way).
            block_states: ``unstacked_block_states()``; the layers then run
                as an unrolled Python loop over these per-layer weights
                instead of a ``lax.scan`` over the stacked ones (for decode
                loops; not with ``output_hidden_states``/``output_attentions``).

        Returns:
            A :class:`DecoderOutput`.
        """
        config = self.config
        ids_BxT = jnp.asarray(input_ids)
        batch, length = ids_BxT.shape
        if attention_mask is None:
            mask_BxT = jnp.ones((batch, length), bool)
        else:
            mask_BxT = jnp.asarray(attention_mask).astype(bool)

        if segment_ids is not None:
            if cache is not None:
                raise ValueError("segment_ids (packed sequences) cannot be used with a KV cache")
            segment_ids = jnp.asarray(segment_ids, jnp.int32)
            if segment_ids.shape != (batch, length):
                raise ValueError(f"segment_ids {segment_ids.shape} must have the shape of input_ids {(batch, length)}")
        # Segment ids of queries and key slots (padding: PAD_SEGMENT); None = no padding, one segment.
        if cache is None:
            key_valid_BxS, offset_B = mask_BxT, None
            if attention_mask is None and segment_ids is None:
                q_segments_BxT = kv_segments_BxS = None
            else:
                q_segments_BxT = kv_segments_BxS = segment_ids_from_mask(mask_BxT, segment_ids)
        else:
            offset_B = cache.lengths
            key_valid_BxS = jax.lax.dynamic_update_slice(cache.valid, mask_BxT, (0, cache.index))
            q_segments_BxT = segment_ids_from_mask(mask_BxT)
            kv_segments_BxS = segment_ids_from_mask(key_valid_BxS)
        if positions is not None:
            positions_BxT = jnp.asarray(positions, jnp.int32)
        elif segment_ids is not None:
            positions_BxT = positions_from_segments(mask_BxT, segment_ids)
        else:
            positions_BxT = positions_from_mask(mask_BxT, offset_B)

        x_BxTxd = self.embed(ids_BxT)
        if config.scale_embeddings:
            # sqrt(d) rounded to the compute dtype, as transformers' Gemma does.
            x_BxTxd = x_BxTxd * jnp.asarray(config.hidden_size**0.5, x_BxTxd.dtype)
        rope = local_rope = None
        uses_local_rope_L = np.asarray(config.layer_uses_local_rope())
        if self.position_embed is not None:
            x_BxTxd = x_BxTxd + self.position_embed(positions_BxT)
        else:
            if not uses_local_rope_L.all():
                rope = rope_tables(positions_BxT, inverse_frequencies(config))
            if uses_local_rope_L.any():
                local_rope = rope_tables(positions_BxT, inverse_frequencies(config, local=True))

        def layer_rope(uses_local):
            """This layer's rope tables (per-layer-type rope: picked by the layer's flag)."""
            if local_rope is None or rope is None:
                return local_rope if rope is None else rope
            if isinstance(uses_local, (bool, np.bool_)):
                return local_rope if uses_local else rope
            return jax.tree.map(lambda a, b: jnp.where(uses_local, a, b), local_rope, rope)

        block_graphdef, block_state = nnx.split(self.blocks)
        uses_window_L = np.asarray(config.layer_uses_window())
        # The window is static when every layer (or none) uses it; otherwise
        # each scanned layer picks with its traced flag.
        window = config.sliding_window if uses_window_L.any() else None
        mixed_window = bool(uses_window_L.any() and not uses_window_L.all())

        # The stacked cache is part of the scan *carry* (not scanned over):
        # each layer writes its new keys/values into it in place, so a decode
        # step never copies the whole cache.
        def run_block(carry, layer_inputs):
            x_BxTxd, stacked_kv = carry
            layer_state, uses_window, uses_local, layer = layer_inputs
            block = nnx.merge(block_graphdef, layer_state)
            cache_kv = None if stacked_kv is None else (*stacked_kv, layer, cache.index)
            y_BxTxd, new_kv, probs = block(
                x_BxTxd,
                q_segment_ids_BxT=q_segments_BxT,
                kv_segment_ids_BxS=kv_segments_BxS,
                window=window,
                window_active=uses_window if mixed_window else None,
                rope=layer_rope(uses_local),
                cache_kv=cache_kv,
                output_attentions=output_attentions,
            )
            layer_input = x_BxTxd if output_hidden_states else None
            return (y_BxTxd, new_kv), (probs, layer_input)

        stacked_kv = None if cache is None else (cache.k, cache.v)
        if block_states is None:
            layers_L = jnp.arange(config.num_layers, dtype=jnp.int32)
            (x_BxTxd, new_kv), (probs_LxBxHxTxS, inputs_LxBxTxd) = jax.lax.scan(
                apply_remat(run_block, config.remat),
                (x_BxTxd, stacked_kv),
                (block_state, uses_window_L, uses_local_rope_L, layers_L),
            )
        else:
            if output_hidden_states or output_attentions:
                raise ValueError("block_states does not support output_hidden_states/output_attentions")
            if len(block_states) != config.num_layers:
                raise ValueError(f"block_states has {len(block_states)} layers, the model {config.num_layers}")
            carry = (x_BxTxd, stacked_kv)
            for layer, layer_state in enumerate(block_states):
                carry, _ = run_block(carry, (layer_state, uses_window_L[layer], uses_local_rope_L[layer], layer))
            (x_BxTxd, new_kv), probs_LxBxHxTxS, inputs_LxBxTxd = carry, None, None
        hidden_BxTxd = self.final_norm(x_BxTxd)

        logits_BxTxV = None
        if return_logits:
            out_dtype = resolve_dtype(config.dtype if logits_dtype is None else logits_dtype)
            head_dxV = self.lm_head_weight().astype(config.dtype)
            logits_BxTxV = jnp.einsum(
                "btd,dv->btv", hidden_BxTxd, head_dxV, preferred_element_type=jnp.float32
            )
            logits_BxTxV = soft_cap(logits_BxTxV, config.final_logit_softcap).astype(out_dtype)

        all_hidden = None
        if output_hidden_states:
            all_hidden = jnp.concatenate([inputs_LxBxTxd, hidden_BxTxd[None]], axis=0)
        new_cache = None
        if cache is not None:
            new_cache = KVCache(
                k=new_kv[0], v=new_kv[1], valid=key_valid_BxS, index=cache.index + length
            )
        return DecoderOutput(
            logits=logits_BxTxV,
            hidden_states=hidden_BxTxd,
            all_hidden_states=all_hidden,
            attention_probs=probs_LxBxHxTxS if output_attentions else None,
            cache=new_cache,
        )


def create_model(
    config: DecoderConfig,
    *,
    rngs: nnx.Rngs | int | jax.Array = 0,
    mesh: Mesh | None = None,
    sharding: ShardingConfig | None = None,
) -> Decoder:
    """Returns a randomly initialised :class:`Decoder` for ``config``.

    Args:
        config: the architecture.
        rngs: an integer seed or a PRNG key (initialisation is compiled, and
            with ``mesh`` every parameter is created directly in its
            sharding), or an ``nnx.Rngs`` (initialised op by op on the
            default device; ``mesh`` then shards afterwards).
        mesh: optional device mesh to shard the parameters over.
        sharding: parameter sharding rules (default ``ShardingConfig()``).
    """
    if isinstance(rngs, nnx.Rngs):
        model = Decoder(config, rngs=rngs)
        return model if mesh is None else shard_model(model, mesh, sharding)
    key = jax.random.key(rngs) if isinstance(rngs, int) else rngs
    graphdef, init = _compiled_init(config, mesh, sharding)
    return nnx.merge(graphdef, init(key))


@functools.lru_cache(maxsize=16)
def _compiled_init(config: DecoderConfig, mesh: Mesh | None, sharding: ShardingConfig | None):
    """``(graphdef, jitted key -> state)`` for ``config``; cached per config and mesh."""
    graphdef, abstract_state = nnx.split(nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0))))
    out_shardings = None if mesh is None else state_shardings(abstract_state, mesh, sharding)

    @functools.partial(jax.jit, out_shardings=out_shardings)
    def init(key):
        return nnx.state(Decoder(config, rngs=nnx.Rngs(params=key)))

    return graphdef, init
