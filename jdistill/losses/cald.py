r"""DistiLLM-2's contrastive approach for LLM distillation (CALD), Ko et al., 2025.

For each prompt the batch holds a teacher response and a student response. The
loss raises the likelihood of teacher responses with skew KL and lowers it on
student responses with skew reverse KL:

.. math::
    L = (1 - \beta)\, \mathrm{SKL}_{\alpha_t}(p \| q)\big|_{y_t}
        + \beta\, \mathrm{SRKL}_{\alpha_s}(q \| p)\big|_{y_s}

Each half is evaluated only on its own rows (no wasted vocabulary work), and
the student term inside the SRKL mixture is stop-gradient. The curriculum of
the paper's Eq. 7 sets a per-sequence ``alpha`` from how far the student still
is from the teacher on that response (:func:`curriculum_alpha`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jdistill.losses import distributions as dist
from jdistill.losses import divergences
from jdistill.losses import reductions

Array = jax.Array


def cald(
    student_logits_t: Array,
    teacher_logits_t: Array,
    mask_t: Array,
    student_logits_s: Array,
    teacher_logits_s: Array,
    mask_s: Array,
    *,
    alpha_t=0.1,
    alpha_s=0.1,
    beta=0.5,
    temperature=1.0,
    reduction: str = "sequence",
    normalizer_t=None,
    normalizer_s=None,
) -> Array:
    r"""The CALD loss of DistiLLM-2 on a teacher-response and a student-response batch.

    .. math::
        L = (1 - \beta)\, R\big[KL(p \| \alpha_t p + (1 - \alpha_t) q)\big]_{t}
          + \beta\, R\big[KL(q \| (1 - \alpha_s) p + \alpha_s\, \mathrm{sg}(q))\big]_{s}

    where ``R`` is the reduction over the response tokens of each batch.

    Args:
      student_logits_t: ``[B, T, V]`` student logits on teacher responses.
      teacher_logits_t: ``[B, T, V]`` teacher logits on teacher responses.
      mask_t: ``[B, T]`` response-token mask of the teacher responses.
      student_logits_s: ``[B', T', V]`` student logits on student responses.
      teacher_logits_s: ``[B', T', V]`` teacher logits on student responses.
      mask_s: ``[B', T']`` response-token mask of the student responses.
      alpha_t: skew of the SKL term: scalar or per-sequence ``[B]``.
      alpha_s: skew of the SRKL term: scalar or per-sequence ``[B']``.
      beta: weight of the SRKL term, in ``[0, 1]`` (paper: rises from 0.5 to 1).
      temperature: positive scalar dividing all logits.
      reduction: ``'sequence'`` (mean per sequence, then over sequences; the
        paper's code) or ``'token'`` (mean over all response tokens).
      normalizer_t, normalizer_s: optional global counts (sequences or tokens,
        according to ``reduction``) for exact gradient accumulation.

    Returns:
      A float32 scalar.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jdistill.losses import cald
      >>> s, t = jax.random.normal(jax.random.key(0), (2, 2, 2, 3, 5))
      >>> mask = jnp.ones((2, 3))
      >>> loss = cald(s[0], t[0], mask, s[1], t[1], mask, beta=0.7)
      >>> loss.shape, bool(loss > 0)
      ((), True)
    """
    dist.check_unit_interval(beta, "beta", "cald")
    reduce = reductions.get_reduction(reduction)
    skl_BxT = divergences.skew_forward_kl(
        student_logits_t, teacher_logits_t, alpha=alpha_t, temperature=temperature
    )
    srkl_BxT = divergences.skew_reverse_kl(
        student_logits_s,
        teacher_logits_s,
        alpha=alpha_s,
        stop_gradient_mixture=True,
        temperature=temperature,
    )
    beta = jnp.asarray(beta, jnp.float32)
    return (1.0 - beta) * reduce(skl_BxT, mask_t, normalizer=normalizer_t) + beta * reduce(
        srkl_BxT, mask_s, normalizer=normalizer_s
    )


def cald_token_divergence(
    student_logits: Array,
    teacher_logits: Array,
    *,
    on_student_response,
    alpha=0.1,
    temperature=1.0,
    where=None,
) -> Array:
    r"""Per-token CALD divergence of a batch that mixes teacher- and student-response rows.

    .. math::
        D_i = \begin{cases}
          KL\big(p \,\|\, \alpha p + (1 - \alpha) q\big) & \text{teacher response (SKL)} \\
          KL\big(q \,\|\, (1 - \alpha) p + \alpha\, \mathrm{sg}(q)\big) & \text{student response (SRKL)}
        \end{cases}

    The two halves of :func:`cald` as one kernel over a single batch whose rows
    are flagged: each token computes only its own row's divergence (one mixture
    and one KL over the vocabulary), so a batch laid out by the training
    engine (rows split over micro-batches and devices as it pleases) needs no
    slicing and does no wasted vocabulary work. Follows the divergence
    contract, so :func:`jdistill.losses.fused_kd_loss` can run it in chunks.

    Args:
      student_logits: ``[..., V]`` student logits.
      teacher_logits: ``[..., V]`` teacher logits.
      on_student_response: 1 (or True) where the token belongs to a student
        response, 0 on teacher responses; a scalar or an array over the
        leading token axes (``[B]`` for ``[B, T, V]`` logits: one flag per row).
      alpha: skew in ``[0, 1]``: scalar, per sequence ``[B]`` or per token.
      temperature: positive scalar dividing both logits.
      where: optional boolean vocabulary mask, as the other divergences.

    Returns:
      ``[...]`` float32 per-token values.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jdistill.losses import cald_token_divergence, skew_forward_kl, skew_reverse_kl
      >>> s, t = jax.random.normal(jax.random.key(0), (2, 2, 3, 5))
      >>> d = cald_token_divergence(s, t, on_student_response=jnp.array([0.0, 1.0]), alpha=0.1)
      >>> bool(jnp.allclose(d[0], skew_forward_kl(s[0], t[0], alpha=0.1)))
      True
      >>> bool(jnp.allclose(d[1], skew_reverse_kl(s[1], t[1], alpha=0.1)))
      True
    """
    name = "cald_token_divergence"
    dist.check_unit_interval(alpha, "alpha", name)
    dist.check_unit_interval(on_student_response, "on_student_response", name)
    dist.check_logits_pair(student_logits, teacher_logits, name)
    dist.check_temperature(temperature, name)
    log_q = dist.log_probs(student_logits, temperature=temperature, where=where)
    log_p = dist.log_probs(teacher_logits, temperature=temperature, where=where)
    token_shape = log_q.shape[:-1]
    a = dist.broadcast_per_sequence(alpha, token_shape, "alpha", name)
    student_row = dist.broadcast_per_sequence(on_student_response, token_shape, "on_student_response", name) > 0.5
    # The distribution being matched, and the mixture it is measured against:
    # teacher rows KL(p || a p + (1-a) q), student rows KL(q || a sg(q) + (1-a) p).
    log_target = jnp.where(student_row, log_q, log_p)
    log_self_in_mixture = jnp.where(student_row, jax.lax.stop_gradient(log_q), log_p)
    log_other = jnp.where(student_row, log_p, log_q)
    log_mix = dist.log_mixture(log_self_in_mixture, log_other, a)
    return dist.kl_from_log_probs(log_target, log_mix)


def mean_token_probability(token_logprobs: Array, mask: Array) -> Array:
    r"""Geometric-mean token probability of each sequence.

    .. math:: \bar p_b = \exp\Big(\frac{\sum_t m_{bt} \log p_{bt}}{\sum_t m_{bt}}\Big)

    Args:
      token_logprobs: ``[B, T]`` log-probability of each response token.
      mask: ``[B, T]`` response-token mask.

    Returns:
      ``[B]`` float32; 0 for a sequence without tokens.
    """
    weights = mask.astype(jnp.float32)
    total = jnp.sum(jnp.where(mask.astype(bool), token_logprobs.astype(jnp.float32), 0.0) * weights, axis=-1)
    count = jnp.sum(weights, axis=-1)
    return jnp.where(count > 0, jnp.exp(total / jnp.where(count > 0, count, 1.0)), 0.0)


def probability_gap(teacher_token_logprobs: Array, student_token_logprobs: Array, mask: Array) -> Array:
    r"""Per-sequence gap ``p̄ - q̄`` between teacher and student mean token probabilities.

    Its mean over the responses of the first epoch is the *reference gap*
    ``m`` that :func:`curriculum_alpha` is calibrated with.

    Args:
      teacher_token_logprobs: ``[B, T]`` teacher log-probabilities of the response tokens.
      student_token_logprobs: ``[B, T]`` student log-probabilities of the same tokens.
      mask: ``[B, T]`` response-token mask.

    Returns:
      ``[B]`` float32 gaps.
    """
    return mean_token_probability(teacher_token_logprobs, mask) - mean_token_probability(
        student_token_logprobs, mask
    )


def curriculum_alpha(
    teacher_token_logprobs: Array,
    student_token_logprobs: Array,
    mask: Array,
    *,
    reference_gap,
    alpha0=0.1,
    alpha_min=0.01,
    eps: float = 1e-5,
) -> Array:
    r"""Per-sequence skew ``alpha`` of DistiLLM-2's curriculum (paper Eq. 7, the release's form).

    .. math::
        \alpha_b = \mathrm{clip}\Big(1 - (1 - \alpha_0)\frac{m}{\bar p_b - \bar q_b + \epsilon},\;
                   \alpha_{min},\; \alpha_0\Big)

    with ``p̄``, ``q̄`` the geometric-mean token probabilities of the response
    under teacher and student (:func:`mean_token_probability`), ``m`` the
    reference gap and ``ε = 1e-5`` as in the authors' release
    (``jongwooko/distillm-2``, ``src/distillm_trainer.py``, ``get_batch_logps``).
    It keeps the skewed gap ``(1 - alpha)(p̄ - q̄)`` near its reference value
    ``(1 - alpha0) m``: responses on which the student is still far from the
    teacher keep ``alpha0``; as the student closes in, ``alpha`` falls towards
    ``alpha_min``. Where the student is already more likely than the teacher
    (``p̄ - q̄ + ε < 0``) the fraction is negative, the formula exceeds 1 and
    the clip gives ``alpha0`` — the release's behaviour; a gap of exactly
    ``-ε`` (a zero denominator) is the limit from above, ``alpha_min``.

    Args:
      teacher_token_logprobs: ``[B, T]`` teacher log-probabilities of the response tokens.
      student_token_logprobs: ``[B, T]`` student log-probabilities of the same tokens.
      mask: ``[B, T]`` response-token mask.
      reference_gap: the scalar ``m`` (mean :func:`probability_gap` measured
        before the curriculum starts); must be positive.
      alpha0: upper bound and starting skew, in ``[0, 1]``.
      alpha_min: lower bound, in ``[0, alpha0]``.
      eps: the release's ``1e-5`` added to the gap.

    Returns:
      ``[B]`` float32 alphas, ready for ``cald(..., alpha_t=..., alpha_s=...)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import curriculum_alpha
      >>> mask = jnp.ones((3, 1))
      >>> teacher = jnp.log(jnp.array([[0.9], [0.5], [0.3]]))
      >>> student = jnp.log(jnp.array([[0.1], [0.4], [0.6]]))  # gaps 0.8, 0.1, -0.3
      >>> [round(float(a), 3) for a in curriculum_alpha(teacher, student, mask, reference_gap=0.2)]
      [0.1, 0.01, 0.1]
    """
    dist.check_unit_interval(alpha0, "alpha0", "curriculum_alpha")
    dist.check_unit_interval(alpha_min, "alpha_min", "curriculum_alpha")
    if isinstance(alpha0, (int, float)) and isinstance(alpha_min, (int, float)) and alpha_min > alpha0:
        raise ValueError(f"curriculum_alpha: alpha_min ({alpha_min}) must not exceed alpha0 ({alpha0}).")
    if isinstance(reference_gap, (int, float)) and not reference_gap > 0:
        raise ValueError(
            f"curriculum_alpha: reference_gap must be > 0, got {reference_gap}; measure it with "
            "probability_gap on responses where the teacher is more likely than the student."
        )
    denominator_B = probability_gap(teacher_token_logprobs, student_token_logprobs, mask) + eps
    nonzero = denominator_B != 0
    ratio_B = jnp.asarray(reference_gap, jnp.float32) / jnp.where(nonzero, denominator_B, 1.0)
    alpha_B = jnp.where(nonzero, 1.0 - (1.0 - alpha0) * ratio_B, alpha_min)
    return jnp.clip(alpha_B, alpha_min, alpha0)
