r"""A weighted mixture of several teachers' distributions over one vocabulary, in log space.

Multi-teacher distillation with one shared vocabulary can average the
teachers' *distributions* per token before comparing them with the student:

.. math:: \bar p = \sum_{k=1}^{K} w_k\, p_k, \qquad p_k = \mathrm{softmax}(z_k / τ),
          \qquad \log \bar p = \operatorname{logsumexp}_k \big(\log w_k + \log p_k\big)

computed as a log-sum-exp over the teachers (never ``exp`` of large logits),
so the result is a valid log-distribution to hand to any divergence kernel as
"logits" at temperature 1.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from jdistill.losses.distributions import log_probs

Array = jax.Array


def mixture_log_probs(teacher_logits: Sequence[Array], weights: Sequence[float], *, temperature=1.0) -> Array:
    r"""``log Σ_k w_k softmax(z_k/τ)`` per position, float32.

    .. math:: \log \bar p_v = \log \sum_k w_k \exp\big(\log \mathrm{softmax}(z_k/τ)_v\big)

    Args:
      teacher_logits: ``K`` arrays ``[..., V]`` (the same shape), one per teacher.
      weights: ``K`` non-negative Python floats, summing to 1 (not renormalised:
        the caller decides; a weight of 0 drops that teacher exactly).
      temperature: positive scalar dividing every teacher's logits.

    Returns:
      ``[..., V]`` float32 log-probabilities of the mixture (``-inf`` where no
      teacher with a positive weight puts mass).

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import mixture_log_probs
      >>> a, b = jnp.log(jnp.array([0.5, 0.5])), jnp.log(jnp.array([0.9, 0.1]))
      >>> [round(float(v), 3) for v in jnp.exp(mixture_log_probs([a, b], [0.75, 0.25]))]  # .75·.5 + .25·.9
      [0.6, 0.4]
    """
    if len(teacher_logits) != len(weights) or not teacher_logits:
        raise ValueError(f"mixture_log_probs: {len(teacher_logits)} teachers but {len(weights)} weights.")
    if any(float(w) < 0 for w in weights):
        raise ValueError(f"mixture_log_probs: weights must be >= 0, got {list(weights)}.")
    kept = [(z, float(w)) for z, w in zip(teacher_logits, weights) if float(w) > 0]
    if not kept:
        raise ValueError("mixture_log_probs: at least one weight must be positive.")
    log_p_KxBxTxV = jnp.stack([log_probs(z, temperature=temperature) for z, _ in kept])
    log_w = jnp.log(jnp.asarray([w for _, w in kept], jnp.float32))
    log_w_Kx1 = log_w.reshape((-1,) + (1,) * (log_p_KxBxTxV.ndim - 1))
    return jax.nn.logsumexp(log_p_KxBxTxV + log_w_Kx1, axis=0)
