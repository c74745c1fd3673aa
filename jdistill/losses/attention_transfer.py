r"""Attention transfer: KL between teacher and student attention distributions.

Each query position of an attention head holds a distribution over the keys
(MiniLM, Wang et al., 2020, distils exactly these rows). The kernels take
attention *probabilities* as the decoder returns them with
``output_attentions=True`` (``[B, H, T, S]`` per layer, float32) and compare
them row by row with

.. math:: \mathrm{KL}(a_t \,\|\, a_s) = \sum_{j} a_{t,j} (\log a_{t,j} - \log a_{s,j})

Terms with ``a_t = 0`` (future or padding keys) count as 0. The student's
probabilities are floored at ``1e-30`` inside the log, so a key the student's
float32 softmax underflowed to 0 gives a large finite value, not ``inf``.

When the head counts differ, heads are either averaged (``heads='mean'``: the
head-averaged attention of each model is still a distribution) or mapped
(``heads='mapped'``: the model with more heads has its heads averaged in
contiguous groups — the query heads that share a key/value head under grouped
query attention are contiguous — down to the other's count, then the KL is taken
head by head and averaged over heads).

:func:`minilm_attention_loss` is MiniLM's own formulation: equal head counts,
KL head by head, averaged over heads (no grouping; a head-count mismatch is an
error). MiniLM applies it to the last layer of both models.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

STUDENT_PROBABILITY_FLOOR = 1e-30
HEAD_MODES = ("mean", "mapped")


def attention_kl(student_probs: Array, teacher_probs: Array) -> Array:
    r"""``KL(teacher ‖ student)`` over the last (key) axis of two attention tensors.

    .. math:: D = \sum_j a_{t,j} \left(\log a_{t,j} - \log \max(a_{s,j}, 10^{-30})\right)

    Args:
      student_probs: ``[..., S]`` student attention probabilities (rows sum to 1).
      teacher_probs: ``[..., S]`` teacher attention probabilities, same shape.

    Returns:
      ``[...]`` float32 per-row divergences.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import attention_kl
      >>> s = jnp.array([0.5, 0.5, 0.0])
      >>> t = jnp.array([1.0, 0.0, 0.0])
      >>> round(float(attention_kl(s, t)), 4)  # 1 * ln(1 / 0.5)
      0.6931
    """
    if jnp.shape(student_probs) != jnp.shape(teacher_probs):
        raise ValueError(
            f"attention_kl: student {jnp.shape(student_probs)} and teacher {jnp.shape(teacher_probs)} "
            "attention must have the same shape (map the heads first, see attention_transfer)."
        )
    p_t = teacher_probs.astype(jnp.float32)
    p_s = student_probs.astype(jnp.float32)
    has_mass = p_t > 0
    log_t = jnp.log(jnp.where(has_mass, p_t, 1.0))
    log_s = jnp.log(jnp.where(has_mass, jnp.maximum(p_s, STUDENT_PROBABILITY_FLOOR), 1.0))
    return jnp.sum(jnp.where(has_mass, p_t * (log_t - log_s), 0.0), axis=-1)


def average_head_groups(probs_BxHxTxS: Array, num_groups: int) -> Array:
    """Averages contiguous groups of heads: ``[B, H, T, S]`` → ``[B, num_groups, T, S]``.

    Head ``h`` falls in group ``h // (H / num_groups)``; ``H`` must be a multiple
    of ``num_groups``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import average_head_groups
      >>> probs = jnp.array([[[[1.0, 0.0]], [[0.0, 1.0]], [[0.5, 0.5]], [[0.5, 0.5]]]])  # [1, 4, 1, 2]
      >>> average_head_groups(probs, 2)[0, :, 0].tolist()
      [[0.5, 0.5], [0.5, 0.5]]
    """
    b, h, t, s = probs_BxHxTxS.shape
    if num_groups < 1 or h % num_groups:
        raise ValueError(f"average_head_groups: {h} heads cannot be averaged into {num_groups} equal groups.")
    grouped = probs_BxHxTxS.astype(jnp.float32).reshape(b, num_groups, h // num_groups, t, s)
    return jnp.mean(grouped, axis=2)


def attention_transfer(student_probs_BxHsxTxS: Array, teacher_probs_BxHtxTxS: Array, *, heads: str = "mean") -> Array:
    r"""Per-query attention KL of one mapped layer pair, averaged over heads.

    * ``heads='mean'``: :math:`\mathrm{KL}(\bar a_t \| \bar a_s)` of the head-averaged
      attentions (any head counts);
    * ``heads='mapped'``: the model with more heads is averaged in contiguous groups
      down to the other's count ``H`` (one count must divide the other), then
      :math:`\frac{1}{H}\sum_h \mathrm{KL}(a_t^h \| a_s^h)`.

    Args:
      student_probs_BxHsxTxS: ``[B, H_s, T, S]`` student attention probabilities.
      teacher_probs_BxHtxTxS: ``[B, H_t, T, S]`` teacher attention probabilities
        (same tokenization: same ``T`` and ``S``).
      heads: ``'mean'`` or ``'mapped'``.

    Returns:
      ``[B, T]`` float32 per-query values (reduce with :func:`jdistill.losses.token_mean`).

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import attention_transfer
      >>> s = jnp.array([[[[0.5, 0.5]], [[0.5, 0.5]]]])  # [B=1, H=2, T=1, S=2]
      >>> t = jnp.array([[[[1.0, 0.0]], [[0.0, 1.0]]]])
      >>> float(attention_transfer(s, t, heads="mean")[0, 0])  # averaged heads agree
      0.0
      >>> round(float(attention_transfer(s, t, heads="mapped")[0, 0]), 4)  # ln 2 per head
      0.6931
    """
    if heads not in HEAD_MODES:
        raise ValueError(f"attention_transfer: heads must be one of {HEAD_MODES}, got {heads!r}.")
    s_shape, t_shape = jnp.shape(student_probs_BxHsxTxS), jnp.shape(teacher_probs_BxHtxTxS)
    if len(s_shape) != 4 or len(t_shape) != 4 or s_shape[0] != t_shape[0] or s_shape[2:] != t_shape[2:]:
        raise ValueError(
            f"attention_transfer: expected [B, H, T, S] attentions over the same tokens, got student "
            f"{s_shape} and teacher {t_shape}."
        )
    h_s, h_t = s_shape[1], t_shape[1]
    if heads == "mean":
        groups = 1
    elif max(h_s, h_t) % min(h_s, h_t):
        raise ValueError(
            f"attention_transfer: heads='mapped' needs one head count to divide the other, got student {h_s} "
            f"and teacher {h_t}; use heads='mean' (method.attention_heads='mean')."
        )
    else:
        groups = min(h_s, h_t)
    student = average_head_groups(student_probs_BxHsxTxS, groups)
    teacher = average_head_groups(teacher_probs_BxHtxTxS, groups)
    return jnp.mean(attention_kl(student, teacher), axis=1)


def minilm_attention_loss(student_probs_BxHxTxS: Array, teacher_probs_BxHxTxS: Array) -> Array:
    r"""MiniLM's self-attention distribution transfer, per query position.

    Wang et al., *MiniLM: Deep Self-Attention Distillation for Task-Agnostic
    Compression of Pre-Trained Transformers*, NeurIPS 2020, Eq. 6: the KL from
    each teacher head's attention distribution to the student's same head,
    averaged over the ``A_h`` heads (and, by the caller, over positions):

    .. math:: \ell_{b,i} = \frac{1}{A_h} \sum_{a=1}^{A_h} \mathrm{KL}\big(a^t_{b,a,i} \,\|\, a^s_{b,a,i}\big)

    The paper distils the *last* layer of both models and requires the same
    number of heads; unequal counts raise an error here (for them use
    :func:`attention_transfer` with ``heads='mapped'``, which averages contiguous
    head groups first). MiniLM's value-relation term is not included.

    Args:
      student_probs_BxHxTxS: ``[B, H, T, S]`` student attention probabilities.
      teacher_probs_BxHxTxS: ``[B, H, T, S]`` teacher attention probabilities,
        same shape (same tokenization, same head count).

    Returns:
      ``[B, T]`` float32 per-query values (reduce with :func:`jdistill.losses.token_mean`).

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import minilm_attention_loss
      >>> s = jnp.array([[[[0.5, 0.5]], [[1.0, 0.0]]]])  # [B=1, H=2, T=1, S=2]
      >>> t = jnp.array([[[[1.0, 0.0]], [[1.0, 0.0]]]])
      >>> round(float(minilm_attention_loss(s, t)[0, 0]), 4)  # (ln 2 + 0) / 2
      0.3466
    """
    s_shape, t_shape = jnp.shape(student_probs_BxHxTxS), jnp.shape(teacher_probs_BxHxTxS)
    if len(s_shape) != 4 or len(t_shape) != 4:
        raise ValueError(
            f"minilm_attention_loss: expected [B, H, T, S] attentions, got student {s_shape} and teacher {t_shape}."
        )
    if s_shape[1] != t_shape[1]:
        raise ValueError(
            f"minilm_attention_loss: MiniLM compares heads one to one and needs equal head counts, got student "
            f"{s_shape[1]} and teacher {t_shape[1]}; use attention_transfer(heads='mapped') to group heads."
        )
    if s_shape != t_shape:
        raise ValueError(
            f"minilm_attention_loss: student {s_shape} and teacher {t_shape} attentions must cover the same tokens."
        )
    return jnp.mean(attention_kl(student_probs_BxHxTxS, teacher_probs_BxHxTxS), axis=1)
