"""The value :func:`jdistill.sampling.generate` returns."""

import dataclasses

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GenerationOutput:
    """Generated tokens of a batch; a pytree of fixed-shape arrays.

    ``N`` is ``max_new_tokens``. Column ``i`` is the ``i``-th generated token.
    A row's real tokens are a prefix: its tokens up to and including the first
    end-of-sequence token (or all ``N`` when it never ends); the columns after
    that hold the pad id and are masked out.

    Attributes:
        tokens: ``[B, N]`` int32 generated ids (pad id after a row ends).
        mask: ``[B, N]`` bool, True on real generated tokens (the EOS token
            itself included).
        lengths: ``[B]`` int32, real tokens per row (``mask.sum(-1)``).
        logprobs: ``[B, N]`` float32, ``log_softmax(logits)[token]`` of the
            *unfiltered* model at temperature 1: the log-probability the
            sampling model assigns the token (DistiLLM-2's curriculum and
            importance weights use this); 0 where ``mask`` is False.
        sampling_logprobs: ``[B, N]`` float32, the token's log-probability
            under the distribution it was actually drawn from (after
            temperature, top-k, top-p, min-p); 0 for greedy decoding and where
            ``mask`` is False.
        topk_ids: ``[B, N, K]`` int32 ids of the ``K`` most likely tokens of
            the unfiltered model at each step (most likely first), or
            ``None`` unless ``num_topk_logprobs > 0`` was asked.
        topk_logprobs: ``[B, N, K]`` float32 log-probabilities of ``topk_ids``
            (unfiltered, temperature 1), or ``None``; 0 where ``mask`` is False.
    """

    tokens: jnp.ndarray
    mask: jnp.ndarray
    lengths: jnp.ndarray
    logprobs: jnp.ndarray
    sampling_logprobs: jnp.ndarray
    topk_ids: jnp.ndarray | None = None
    topk_logprobs: jnp.ndarray | None = None
