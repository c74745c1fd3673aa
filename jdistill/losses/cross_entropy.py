"""Per-token cross-entropy against gold next tokens."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jdistill.losses import distributions as dist
from jdistill.losses import explicit_axes

Array = jax.Array


def token_cross_entropy(logits: Array, targets: Array, *, temperature=1.0, where=None) -> Array:
    r"""Negative log-likelihood of each target token, ``-log softmax(z / τ)[y]``.

    Args:
      logits: ``[..., V]`` logits, any float dtype (computed in float32).
      targets: ``[...]`` integer token ids in ``[0, V)``.
      temperature: positive scalar dividing the logits.
      where: optional boolean vocabulary mask, as in the divergences.

    Returns:
      ``[...]`` float32 per-token values, not reduced. A target whose
      probability is 0 (masked or ``-inf`` logit) gives ``inf``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import token_cross_entropy
      >>> logits = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
      >>> round(float(token_cross_entropy(logits, jnp.array([0]))[0]), 4)  # ln 2
      0.6931
    """
    if not jnp.issubdtype(jnp.result_type(logits), jnp.floating):
        raise TypeError(f"token_cross_entropy: logits must be floating-point, got {jnp.result_type(logits)}.")
    if not jnp.issubdtype(jnp.result_type(targets), jnp.integer):
        raise TypeError(f"token_cross_entropy: targets must be integer token ids, got {jnp.result_type(targets)}.")
    if jnp.shape(targets) != jnp.shape(logits)[:-1]:
        raise ValueError(
            f"token_cross_entropy: targets {jnp.shape(targets)} must match logits {jnp.shape(logits)} "
            "without the vocabulary axis."
        )
    dist.check_temperature(temperature, "token_cross_entropy")
    log_p = dist.log_probs(logits, temperature=temperature, where=where)
    return -explicit_axes.take_along_axis(log_p, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
