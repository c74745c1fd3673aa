"""Token-level divergences between a teacher and a student distribution.

Every kernel here shares one contract::

    f(student_logits, teacher_logits, *, temperature=1.0, where=None, ...) -> per-token values

* ``student_logits`` and ``teacher_logits`` are ``[..., V]`` arrays over the same
  vocabulary, any floating dtype (bf16 and fp16 are upcast to float32).
* ``q = softmax(student_logits / temperature)``, ``p = softmax(teacher_logits / temperature)``.
  No ``temperature**2`` factor is applied.
* ``where`` is an optional boolean mask broadcastable to the logits; vocabulary
  entries outside it (and entries whose logit is ``-inf``) have probability 0.
* The result has shape ``logits.shape[:-1]``, dtype float32, and is not reduced:
  combine it with :func:`jdistill.losses.token_mean` or
  :func:`jdistill.losses.sequence_mean`.

Terms ``0 * log 0`` count as 0 (no NaN values, no NaN gradients); a row whose
distribution is empty gives 0. Arguments outside their domain raise at trace time.
"""

from __future__ import annotations

import numbers
from typing import Callable

import jax
import jax.numpy as jnp

from jdistill.losses import distributions as dist
from jdistill.losses import explicit_axes

Array = jax.Array


def _prepare(kernel, student_logits, teacher_logits, temperature, where):
    dist.check_logits_pair(student_logits, teacher_logits, kernel)
    dist.check_temperature(temperature, kernel)
    log_q = dist.log_probs(student_logits, temperature=temperature, where=where)
    log_p = dist.log_probs(teacher_logits, temperature=temperature, where=where)
    return log_q, log_p


def forward_kl(student_logits: Array, teacher_logits: Array, *, temperature=1.0, where=None) -> Array:
    r"""Forward KL divergence ``KL(p || q)``, the classic KD objective (Hinton et al., 2015).

    .. math:: D(p, q) = \sum_v p_v (\log p_v - \log q_v)

    Mode-covering: the student is pushed to put mass wherever the teacher does.

    Args:
      student_logits: ``[..., V]`` student logits.
      teacher_logits: ``[..., V]`` teacher logits.
      temperature: positive scalar dividing both logits.
      where: optional boolean mask over vocabulary entries, broadcastable to the logits.

    Returns:
      ``[...]`` float32 per-token divergences.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import forward_kl
      >>> s = jnp.log(jnp.array([0.25, 0.25, 0.5]))
      >>> t = jnp.log(jnp.array([0.5, 0.25, 0.25]))
      >>> round(float(forward_kl(s, t)), 4)  # 0.5 ln 2 + 0.25 ln 0.5
      0.1733
    """
    log_q, log_p = _prepare("forward_kl", student_logits, teacher_logits, temperature, where)
    return dist.kl_from_log_probs(log_p, log_q)


def reverse_kl(student_logits: Array, teacher_logits: Array, *, temperature=1.0, where=None) -> Array:
    r"""Reverse KL divergence ``KL(q || p)`` (MiniLLM, Gu et al., 2024).

    .. math:: D(p, q) = \sum_v q_v (\log q_v - \log p_v)

    Mode-seeking: the student is penalised for mass where the teacher has little.
    Shapes and arguments as :func:`forward_kl`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import reverse_kl
      >>> s = jnp.log(jnp.array([0.25, 0.25, 0.5]))
      >>> t = jnp.log(jnp.array([0.5, 0.25, 0.25]))
      >>> round(float(reverse_kl(s, t)), 4)  # 0.25 ln 0.5 + 0.5 ln 2
      0.1733
    """
    log_q, log_p = _prepare("reverse_kl", student_logits, teacher_logits, temperature, where)
    return dist.kl_from_log_probs(log_q, log_p)


def generalized_jsd(
    student_logits: Array, teacher_logits: Array, *, beta=0.5, temperature=1.0, where=None
) -> Array:
    r"""Generalized Jensen-Shannon divergence of GKD (Agarwal et al., 2024).

    .. math::
        m = \beta p + (1 - \beta) q, \qquad
        D_\beta(p, q) = \beta\, KL(p \| m) + (1 - \beta)\, KL(q \| m)

    for ``0 < beta < 1``, and exactly forward KL ``KL(p || q)`` at ``beta = 0``
    and exactly reverse KL ``KL(q || p)`` at ``beta = 1`` (the interior formula
    vanishes at both ends; these endpoints follow GKD's and TRL's definition).
    The mixture is formed in log space.

    Args:
      student_logits, teacher_logits, temperature, where: as :func:`forward_kl`.
      beta: scalar in ``[0, 1]`` (a Python number or a scalar array).

    Returns:
      ``[...]`` float32 per-token divergences.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import generalized_jsd, forward_kl
      >>> s = jnp.log(jnp.array([0.25, 0.25, 0.5]))
      >>> t = jnp.log(jnp.array([0.5, 0.25, 0.25]))
      >>> bool(generalized_jsd(s, t, beta=0.0) == forward_kl(s, t))
      True
    """
    dist.check_unit_interval(beta, "beta", "generalized_jsd")
    log_q, log_p = _prepare("generalized_jsd", student_logits, teacher_logits, temperature, where)
    if isinstance(beta, numbers.Real):
        return generalized_jsd_of_log_probs(log_q, log_p, beta=beta)
    beta = jnp.asarray(beta, jnp.float32)
    if beta.ndim:
        raise ValueError(f"generalized_jsd: beta must be a scalar, got shape {beta.shape}.")
    return jnp.where(
        beta == 0,
        dist.kl_from_log_probs(log_p, log_q),
        jnp.where(beta == 1, dist.kl_from_log_probs(log_q, log_p), _interior_jsd(log_p, log_q, beta)),
    )


def generalized_jsd_of_log_probs(log_q: Array, log_p: Array, *, beta: float) -> Array:
    r""":func:`generalized_jsd` between two vectors of log-probabilities taken as they are.

    Nothing is renormalised, so it also applies to a *part* of two
    distributions (entries whose masses do not sum to 1), as TRL's GOLD compares
    the matched vocabulary entries:

    .. math::
        m_v = \beta p_v + (1 - \beta) q_v, \qquad
        D_\beta = \beta \sum_v p_v \log\frac{p_v}{m_v} + (1 - \beta) \sum_v q_v \log\frac{q_v}{m_v}

    with ``Σ_v p_v log(p_v/q_v)`` at ``beta = 0`` and ``Σ_v q_v log(q_v/p_v)``
    at ``beta = 1``; the mixture is formed in log space and ``0 log 0 = 0``.

    Args:
      log_q: ``[..., K]`` student log-probabilities (``-inf`` allowed).
      log_p: ``[..., K]`` teacher log-probabilities.
      beta: Python number in ``[0, 1]``.

    Returns:
      ``[...]`` float32.

    Example:
      >>> import jax.numpy as jnp
      >>> q, p = jnp.log(jnp.array([0.2, 0.1])), jnp.log(jnp.array([0.4, 0.1]))  # masses 0.3 and 0.5
      >>> round(float(generalized_jsd_of_log_probs(q, p, beta=0.0)), 4)  # 0.4 ln 2, no renormalisation
      0.2773
    """
    dist.check_unit_interval(beta, "beta", "generalized_jsd_of_log_probs")
    log_q, log_p = log_q.astype(jnp.float32), log_p.astype(jnp.float32)
    if beta == 0:
        return dist.kl_from_log_probs(log_p, log_q)
    if beta == 1:
        return dist.kl_from_log_probs(log_q, log_p)
    return _interior_jsd(log_p, log_q, beta)


def _interior_jsd(log_p: Array, log_q: Array, beta) -> Array:
    log_m = dist.log_mixture(log_p, log_q, beta)
    return beta * dist.kl_from_log_probs(log_p, log_m) + (1 - beta) * dist.kl_from_log_probs(log_q, log_m)


def js_divergence(student_logits: Array, teacher_logits: Array, *, temperature=1.0, where=None) -> Array:
    r"""Symmetric Jensen-Shannon divergence (Wen et al., 2023 use it for sequence KD).

    .. math:: m = \tfrac12 (p + q), \qquad D(p, q) = \tfrac12 KL(p \| m) + \tfrac12 KL(q \| m)

    Bounded by ``ln 2``. Shapes and arguments as :func:`forward_kl`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import js_divergence
      >>> s = jnp.array([0.0, -jnp.inf])
      >>> t = jnp.array([-jnp.inf, 0.0])
      >>> round(float(js_divergence(s, t)), 4)  # disjoint supports: ln 2
      0.6931
    """
    log_q, log_p = _prepare("js_divergence", student_logits, teacher_logits, temperature, where)
    return _interior_jsd(log_p, log_q, 0.5)


def skew_forward_kl(
    student_logits: Array, teacher_logits: Array, *, alpha=0.1, temperature=1.0, where=None
) -> Array:
    r"""Skew KL divergence of DistiLLM (Ko et al., 2024).

    .. math:: D_\alpha(p, q) = KL\big(p \,\|\, \alpha p + (1 - \alpha) q\big)

    ``alpha = 0`` gives forward KL. The student's gradient flows through the
    mixture. The mixture is formed in log space.

    Args:
      student_logits, teacher_logits, temperature, where: as :func:`forward_kl`.
      alpha: in ``[0, 1]``; a scalar, or an array over the leading token axes
        (``[B]`` for ``[B, T, V]`` logits: one value per sequence, as the
        DistiLLM-2 curriculum produces), broadcast over the remaining axes.

    Returns:
      ``[...]`` float32 per-token divergences.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import skew_forward_kl, forward_kl
      >>> s = jnp.log(jnp.array([0.25, 0.25, 0.5]))
      >>> t = jnp.log(jnp.array([0.5, 0.25, 0.25]))
      >>> bool(jnp.allclose(skew_forward_kl(s, t, alpha=0.0), forward_kl(s, t)))
      True
    """
    dist.check_unit_interval(alpha, "alpha", "skew_forward_kl")
    log_q, log_p = _prepare("skew_forward_kl", student_logits, teacher_logits, temperature, where)
    a = dist.broadcast_per_sequence(alpha, log_p.shape[:-1], "alpha", "skew_forward_kl")
    log_mix = dist.log_mixture(log_p, log_q, a)
    return dist.kl_from_log_probs(log_p, log_mix)


def skew_reverse_kl(
    student_logits: Array,
    teacher_logits: Array,
    *,
    alpha=0.1,
    stop_gradient_mixture: bool = False,
    temperature=1.0,
    where=None,
) -> Array:
    r"""Skew reverse KL divergence of DistiLLM (Ko et al., 2024).

    .. math:: D_\alpha(p, q) = KL\big(q \,\|\, (1 - \alpha) p + \alpha q\big)

    ``alpha = 0`` gives reverse KL. With ``stop_gradient_mixture=True`` the
    student term inside the mixture is ``stop_gradient(q)``, as DistiLLM-2's
    CALD uses it on student-generated responses; the value is unchanged.

    Args:
      student_logits, teacher_logits, temperature, where: as :func:`forward_kl`.
      alpha: in ``[0, 1]``; scalar or per-sequence array, as in :func:`skew_forward_kl`.
      stop_gradient_mixture: block the gradient through the student side of the mixture.

    Returns:
      ``[...]`` float32 per-token divergences.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import skew_reverse_kl, reverse_kl
      >>> s = jnp.log(jnp.array([0.25, 0.25, 0.5]))
      >>> t = jnp.log(jnp.array([0.5, 0.25, 0.25]))
      >>> bool(jnp.allclose(skew_reverse_kl(s, t, alpha=0.0), reverse_kl(s, t)))
      True
    """
    dist.check_unit_interval(alpha, "alpha", "skew_reverse_kl")
    log_q, log_p = _prepare("skew_reverse_kl", student_logits, teacher_logits, temperature, where)
    a = dist.broadcast_per_sequence(alpha, log_q.shape[:-1], "alpha", "skew_reverse_kl")
    log_q_in_mix = jax.lax.stop_gradient(log_q) if stop_gradient_mixture else log_q
    log_mix = dist.log_mixture(log_p, log_q_in_mix, 1.0 - a)
    return dist.kl_from_log_probs(log_q, log_mix)


def total_variation(student_logits: Array, teacher_logits: Array, *, temperature=1.0, where=None) -> Array:
    r"""Total variation distance (Wen et al., 2023).

    .. math:: D(p, q) = \tfrac12 \sum_v |p_v - q_v|

    Lies in ``[0, 1]``. Shapes and arguments as :func:`forward_kl`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import total_variation
      >>> s = jnp.log(jnp.array([0.25, 0.25, 0.5]))
      >>> t = jnp.log(jnp.array([0.5, 0.25, 0.25]))
      >>> round(float(total_variation(s, t)), 4)
      0.25
    """
    log_q, log_p = _prepare("total_variation", student_logits, teacher_logits, temperature, where)
    return 0.5 * jnp.sum(jnp.abs(jnp.exp(log_p) - jnp.exp(log_q)), axis=-1)


def adaptive_kl(
    student_logits: Array, teacher_logits: Array, *, mu=0.5, temperature=1.0, where=None
) -> Array:
    r"""Adaptive KL divergence (AKL, Wu et al., 2024).

    Sort the teacher probabilities ascending; the *tail* is the set of entries
    whose cumulative teacher mass, counted from the smallest, is at most ``mu``;
    the *head* is the rest. With the stop-gradient gaps
    ``g_head = sum_head |p - q|`` and ``g_tail = sum_tail |p - q|``:

    .. math::
        AKL = \frac{g_{head}}{g_{head} + g_{tail}} KL(p \| q)
            + \frac{g_{tail}}{g_{head} + g_{tail}} KL(q \| p)

    Where ``p = q`` (both gaps 0) the result is 0. Shapes and other arguments
    as :func:`forward_kl`.

    Args:
      mu: cumulative teacher mass in ``[0, 1]`` that defines the tail.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import adaptive_kl, forward_kl
      >>> s = jnp.log(jnp.array([0.25, 0.25, 0.5]))
      >>> t = jnp.log(jnp.array([0.5, 0.25, 0.25]))
      >>> # no entry has cumulative mass <= 0: AKL is forward KL
      >>> bool(jnp.allclose(adaptive_kl(s, t, mu=0.0), forward_kl(s, t)))
      True
    """
    dist.check_unit_interval(mu, "mu", "adaptive_kl")
    log_q, log_p = _prepare("adaptive_kl", student_logits, teacher_logits, temperature, where)
    p, q = jnp.exp(log_p), jnp.exp(log_q)
    gap = jax.lax.stop_gradient(jnp.abs(p - q))
    # Sort the gaps along with the teacher probabilities (stable: ties keep vocabulary order).
    # Sorting needs whole rows: under Explicit mesh axes a sharded vocabulary is gathered first.
    sorted_p, sorted_gap = jax.lax.sort(
        (explicit_axes.unshard_dim(jax.lax.stop_gradient(p), -1), explicit_axes.unshard_dim(gap, -1)),
        dimension=p.ndim - 1, is_stable=True, num_keys=1,
    )
    in_tail = jnp.cumsum(sorted_p, axis=-1) <= mu
    g_tail = jnp.sum(jnp.where(in_tail, sorted_gap, 0.0), axis=-1)
    g_head = jnp.sum(gap, axis=-1) - g_tail
    total = g_head + g_tail
    safe_total = jnp.where(total > 0, total, 1.0)
    w_head = jnp.where(total > 0, g_head / safe_total, 0.0)
    w_tail = jnp.where(total > 0, g_tail / safe_total, 0.0)
    return w_head * dist.kl_from_log_probs(log_p, log_q) + w_tail * dist.kl_from_log_probs(log_q, log_p)


Divergence = Callable[..., Array]

# The divergences selectable by name in configs (``method.divergence``).
DIVERGENCES: dict[str, Divergence] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "js_divergence": js_divergence,
    "generalized_jsd": generalized_jsd,
    "skew_forward_kl": skew_forward_kl,
    "skew_reverse_kl": skew_reverse_kl,
    "total_variation": total_variation,
    "adaptive_kl": adaptive_kl,
}


def get_divergence(name: str) -> Divergence:
    """Returns the divergence kernel registered under ``name``."""
    try:
        return DIVERGENCES[name]
    except KeyError:
        raise ValueError(f"Unknown divergence {name!r}; choose one of {sorted(DIVERGENCES)}.") from None
