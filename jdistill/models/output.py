"""The value a decoder call returns."""

import dataclasses

import jax
import jax.numpy as jnp

from jdistill.models.kv_cache import KVCache


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DecoderOutput:
    """Outputs of :class:`jdistill.models.decoder.Decoder`; a pytree.

    Attributes:
        logits: ``[B, T, V]`` next-token logits (``None`` when the call asked
            for ``return_logits=False``).
        hidden_states: ``[B, T, d]`` last hidden state *after* the final norm,
            i.e. exactly what the LM head multiplies.
        all_hidden_states: with ``output_hidden_states=True``, ``[L + 1, B, T,
            d]``: the embeddings, the outputs of blocks ``0..L-2`` and, last,
            ``hidden_states`` (the Hugging Face convention).
        attention_probs: with ``output_attentions=True``, ``[L, B, H, T, S]``
            float32 attention probabilities (``S`` is ``T`` without a cache,
            the cache length with one).
        cache: the updated :class:`KVCache` when the call was given one.
    """

    logits: jnp.ndarray | None
    hidden_states: jnp.ndarray
    all_hidden_states: jnp.ndarray | None = None
    attention_probs: jnp.ndarray | None = None
    cache: KVCache | None = None
