r"""Log-probability of each given token: from logits, or from hidden states and a head in chunks.

``log softmax(z / τ)[y]`` at every position, the per-token quantity behind
sequence likelihoods, importance weights and DistiLLM-2's curriculum
(:func:`jdistill.losses.mean_token_probability`). The fused variant never
holds ``[tokens, V]`` logits; it is for statistics, so it carries no gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jdistill.losses import distributions as dist
from jdistill.losses import explicit_axes
from jdistill.losses import fused_core

Array = jax.Array


def token_logprobs(logits: Array, targets: Array, *, temperature=1.0) -> Array:
    r"""``log softmax(logits / τ)[target]`` at every position.

    .. math:: \ell_i = z_{i, y_i}/\tau - \log \sum_v e^{z_{i v}/\tau}

    Args:
      logits: ``[..., V]`` logits, any floating dtype (computed in float32).
      targets: ``[...]`` integer token ids in ``[0, V)`` (ids outside are clipped;
        mask such positions out downstream).
      temperature: positive scalar dividing the logits.

    Returns:
      ``[...]`` float32 log-probabilities.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import token_logprobs
      >>> logits = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
      >>> float(jnp.exp(token_logprobs(logits, jnp.array([1]))[0]))
      0.25
    """
    dist.check_temperature(temperature, "token_logprobs")
    scaled = logits.astype(jnp.float32) / jnp.asarray(temperature, jnp.float32)
    vocab = scaled.shape[-1]
    picked = explicit_axes.take_along_axis(scaled, jnp.clip(targets, 0, vocab - 1)[..., None].astype(jnp.int32), axis=-1)
    return picked[..., 0] - jax.nn.logsumexp(scaled, axis=-1)


def fused_token_logprobs(
    hidden: Array,
    head: Array,
    targets: Array,
    *,
    temperature=1.0,
    head_layout: str = "dv",
    vocab_size: int | None = None,
    chunk_size: int = 256,
    logit_softcap: float | None = None,
) -> Array:
    r""":func:`token_logprobs` of ``hidden @ head``, ``chunk_size`` tokens at a time, without gradient.

    Args:
      hidden: ``[..., d]`` last hidden states.
      head: ``[d, V]`` (``head_layout='dv'``, as ``model.lm_head_weight()``) or ``[V, d]`` (``'vd'``).
      targets: ``[...]`` integer ids (the leading shape of ``hidden``).
      temperature: positive scalar dividing the logits.
      head_layout: ``'dv'`` or ``'vd'``.
      vocab_size: use only the first ``vocab_size`` logits (a padded head); None = all.
      chunk_size: tokens per chunk; temporary memory is ``chunk_size x V`` float32.
      logit_softcap: the model's final-logit soft-cap (``model.config.final_logit_softcap``),
        applied as ``tanh(z / cap) * cap`` before the softmax; None: none.

    Returns:
      ``[...]`` float32 log-probabilities (``stop_gradient``: for statistics, not losses).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jdistill.losses import fused_token_logprobs, token_logprobs
      >>> h = jax.random.normal(jax.random.key(0), (2, 5, 8))
      >>> w = jax.random.normal(jax.random.key(1), (8, 32))
      >>> y = jnp.arange(10).reshape(2, 5)
      >>> bool(jnp.allclose(fused_token_logprobs(h, w, y, chunk_size=3), token_logprobs(h @ w, y), atol=1e-5))
      True
    """
    if head_layout not in ("dv", "vd"):
        raise ValueError(f"fused_token_logprobs: head_layout must be 'dv' or 'vd', got {head_layout!r}.")
    dist.check_temperature(temperature, "fused_token_logprobs")
    if logit_softcap is not None and not (isinstance(logit_softcap, (int, float)) and logit_softcap > 0):
        raise ValueError(f"fused_token_logprobs: logit_softcap must be None or a positive number, got {logit_softcap!r}.")
    token_shape = tuple(jnp.shape(hidden)[:-1])
    if tuple(jnp.shape(targets)) != token_shape:
        raise ValueError(
            f"fused_token_logprobs: targets {jnp.shape(targets)} must have the token shape {token_shape} of hidden."
        )
    vocab = int(jnp.shape(head)[fused_core.head_vocab_axis(head_layout)]) if vocab_size is None else int(vocab_size)
    hidden_NxD = jax.lax.stop_gradient(jnp.reshape(hidden, (-1, jnp.shape(hidden)[-1])))
    targets_N = jnp.reshape(targets, (-1,))
    num_tokens = hidden_NxD.shape[0]
    if num_tokens == 0:
        return jnp.zeros(token_shape, jnp.float32)
    chunk = max(1, min(int(chunk_size), num_tokens))
    num_chunks = -(-num_tokens // chunk)
    head = jax.lax.stop_gradient(head)

    def one_chunk(xs):
        hidden_CxD, targets_C = xs
        logits_CxV = fused_core.soft_cap(fused_core.chunk_logits(hidden_CxD, head, head_layout, vocab), logit_softcap)
        return token_logprobs(logits_CxV, targets_C, temperature=temperature)

    chunks = (fused_core.to_chunks(hidden_NxD, num_chunks, chunk), fused_core.to_chunks(targets_N, num_chunks, chunk))
    out_KxC = jax.lax.map(one_chunk, chunks)
    # Chunk k holds tokens k, K + k, 2K + k, ...: undo the striding.
    out_N = jnp.swapaxes(out_KxC, 0, 1).reshape(-1)[:num_tokens]
    return out_N.reshape(token_shape)
