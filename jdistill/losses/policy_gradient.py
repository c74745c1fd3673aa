"""Token-level policy-gradient pieces of MiniLLM (Gu et al., 2024): returns, whitening, the clipped surrogate.

Pure ``jnp`` functions of ``[B, T]`` arrays; ``mask_BxT`` marks the response
tokens (1) and padding (0). Padding contributes nothing to any sum.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def discounted_returns(rewards_BxT: Array, mask_BxT: Array, *, gamma: float, length_norm: bool,
                       include_current: bool = True) -> Array:
    r"""Per-token returns of a sequence of rewards, optionally divided by the number of summed tokens.

    .. math:: R_t = \frac{\sum_{i \ge t} \gamma^{i - t} m_i r_i}{n_t}, \qquad
              n_t = \max\big(1, \sum_{i \ge t} m_i\big)\ \text{(length_norm, else } n_t = 1)

    (``include_current=False``: the sums start at ``i = t + 1``, the paper's
    long-term term :math:`R_{t+1}`). MiniLLM's release sums from ``t``
    (``minillm/minillm/losses.py``, ``_get_advantages_and_returns``) and counts
    the remaining response tokens without discount.

    Args:
      rewards_BxT: float rewards (no gradient flows through the result).
      mask_BxT: response-token mask.
      gamma: discount in ``[0, 1]``.
      length_norm: divide by ``n_t``.
      include_current: the return at ``t`` includes ``r_t``.

    Returns:
      ``[B, T]`` float32 returns.

    Example:
      >>> import jax.numpy as jnp
      >>> r = jnp.array([[1.0, 2.0, 4.0]]); m = jnp.ones((1, 3))
      >>> discounted_returns(r, m, gamma=0.5, length_norm=False).tolist()
      [[3.0, 4.0, 4.0]]
      >>> discounted_returns(r, m, gamma=0.5, length_norm=True).tolist()
      [[1.0, 2.0, 4.0]]
    """
    mask = mask_BxT.astype(jnp.float32)
    rewards = jax.lax.stop_gradient(rewards_BxT.astype(jnp.float32)) * mask
    length = rewards.shape[-1]
    t = jnp.arange(length)
    later_TxT = t[:, None] >= t[None, :] if include_current else t[:, None] > t[None, :]  # [i, t]: i counts at t
    steps_TxT = (t[:, None] - t[None, :]).astype(jnp.float32)
    discount_TxT = jnp.where(later_TxT, jnp.asarray(gamma, jnp.float32) ** jnp.maximum(steps_TxT, 0.0), 0.0)
    returns = jnp.einsum("bi,it->bt", rewards, discount_TxT)
    if length_norm:
        counts = jnp.einsum("bi,it->bt", mask, later_TxT.astype(jnp.float32))
        returns = returns / jnp.maximum(counts, 1.0)
    return returns


def masked_whiten(values_BxT: Array, mask_BxT: Array, eps: float = 1e-8) -> Array:
    r"""``(x - mean) / sqrt(var + eps)`` over the masked entries (unbiased variance, as ``torch.var_mean``).

    Example:
      >>> import jax.numpy as jnp
      >>> out = masked_whiten(jnp.array([[1.0, 3.0, 99.0]]), jnp.array([[1.0, 1.0, 0.0]]))
      >>> [round(v, 4) for v in out[0, :2].tolist()]
      [-0.7071, 0.7071]
    """
    mask = mask_BxT.astype(jnp.float32)
    values = values_BxT.astype(jnp.float32)
    count = jnp.sum(mask)
    mean = jnp.sum(values * mask) / jnp.maximum(count, 1.0)
    var = jnp.sum(jnp.square(values - mean) * mask) / jnp.maximum(count - 1.0, 1.0)
    return (values - mean) * jax.lax.rsqrt(var + eps)


def clipped_surrogate(advantages_BxT: Array, weights_BxT: Array, cliprange: float) -> tuple[Array, Array]:
    r"""PPO's clipped objective at ratio 1 (one update per rollout), with importance weights ``w``.

    The release's token loss is ``max(-A · ρw, -A · clip(ρw, 1 - ε, 1 + ε))``
    with ``ρ = q_θ(y) / q_old(y)`` (``minillm/minillm/losses.py``, ``_pg_loss``).
    At ``ρ = 1`` its value is ``max(-A w, -A clip(w))`` and its gradient is
    ``-c A ∇ log q_θ(y)``, where ``c = w`` when the unclipped branch is the
    maximum (or ``w`` lies inside the range) and ``c = 0`` when the clipped
    branch wins.

    Returns:
      ``(value_BxT, coef_BxT)``: the token losses and ``c · A`` (no gradient),
      so that ``value + coef · (CE - stop_gradient(CE))`` has the release's
      value and gradient, ``CE = -log q_θ(y)``.

    Example:
      >>> import jax.numpy as jnp
      >>> value, coef = clipped_surrogate(jnp.array([[2.0, 2.0]]), jnp.array([[1.1, 1.5]]), 0.2)
      >>> value.tolist(), coef.tolist()
      ([[-2.200000047683716, -2.4000000953674316]], [[2.200000047683716, 0.0]])
    """
    a = jax.lax.stop_gradient(advantages_BxT.astype(jnp.float32))
    w = jax.lax.stop_gradient(weights_BxT.astype(jnp.float32))
    clipped = jnp.clip(w, 1.0 - cliprange, 1.0 + cliprange)
    unclipped_loss, clipped_loss = -a * w, -a * clipped
    value = jnp.maximum(unclipped_loss, clipped_loss)
    active = (clipped == w) | (unclipped_loss > clipped_loss)
    return value, jnp.where(active, a * w, 0.0)
