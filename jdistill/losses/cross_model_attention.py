"""Cross-model attention (CMA) of Dual-Space Knowledge Distillation, Zhang et al., 2024.

When teacher and student use different tokenizers, their sequences have
different lengths and there is no one-to-one token map. CMA learns a soft
alignment: each student position attends over the teacher positions of the same
text (and vice versa with the transposed scores), so that each model's hidden
states can be re-expressed on the other's token grid and pushed through the
other model's LM head.

The function here is pure: the projector parameters are an explicit pytree
argument (``{'query' | 't2s' | 's2t': {'kernel': [d_in, d_out], 'bias': [d_out]}}``,
shapes from :func:`cma_param_shapes`), so the caller owns them (jdistill's
DSKD-CMA method initialises and trains them: ``jdistill.methods.projectors``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jdistill.losses import distributions as dist

Array = jax.Array


class CrossModelAttentionOutput(NamedTuple):
    """What :func:`cross_model_attention` returns.

    Attributes:
      t2s_hidden: ``[B, Ts, ds]`` teacher information on the student's token grid
        (feeds the student head: ``t2s_hidden @ stop_gradient(W_s)``).
      s2t_hidden: ``[B, Tt, dt]`` student information on the teacher's token grid
        (feeds the frozen teacher head).
      t2s_weights: ``[B, Ts, Tt]`` attention of each student position over the
        teacher positions (rows sum to 1 at response positions, 0 elsewhere).
      s2t_weights: ``[B, Tt, Ts]`` attention of each teacher position over the
        student positions, from the same scores transposed.
    """

    t2s_hidden: Array
    s2t_hidden: Array
    t2s_weights: Array
    s2t_weights: Array


def cma_param_shapes(student_dim: int, teacher_dim: int) -> dict[str, tuple[int, int]]:
    """``(d_in, d_out)`` of the three linear maps :func:`cross_model_attention` reads from ``params``."""
    return {
        "query": (2 * student_dim, 2 * teacher_dim),
        "t2s": (teacher_dim, student_dim),
        "s2t": (student_dim, teacher_dim),
    }


def _linear(params: dict, x: Array) -> Array:
    return x @ params["kernel"].astype(jnp.float32) + params["bias"].astype(jnp.float32)


STD_OVER = ("all", "response")


def masked_std(x_BxTxD: Array, mask_BxT: Array) -> Array:
    """One scalar standard deviation (unbiased) of all entries at masked positions."""
    weights = jnp.broadcast_to(mask_BxT.astype(jnp.float32)[..., None], x_BxTxD.shape)
    count = jnp.sum(weights)
    mean = jnp.sum(x_BxTxD * weights) / jnp.maximum(count, 1.0)
    var = jnp.sum(jnp.square(x_BxTxD - mean) * weights) / jnp.maximum(count - 1.0, 1.0)
    return jnp.sqrt(jnp.maximum(var, 1e-12))


def cross_model_attention(
    params: dict,
    *,
    student_input_embeds: Array,
    student_target_embeds: Array,
    student_hidden: Array,
    student_mask: Array,
    teacher_input_embeds: Array,
    teacher_target_embeds: Array,
    teacher_hidden: Array,
    teacher_mask: Array,
    std_over: str = "all",
) -> CrossModelAttentionOutput:
    r"""DSKD's cross-model attention between a student and a teacher tokenization.

    With index embeddings ``e_s = [E_s(x); E_s(y)]`` (input token and next-token
    target, from the student's input embedding table) and ``e_t`` likewise for
    the teacher, all stop-gradient:

    .. math::
        Q = P_{query}(e_s), \quad K = e_t / \sigma(e_t), \quad
        V_t = P_{t2s}\big(h_t / \sigma(h_t) + E_t(y') / \sigma(E_t(y'))\big), \quad
        V_s = P_{s2t}(h_s)

        A = Q K^\top / \sqrt{2 d_t}, \qquad
        h_{t2s} = \mathrm{softmax}_j(A)\, V_t, \qquad
        h_{s2t} = \mathrm{softmax}_i(A^\top)\, V_s

    Scores between a student position ``i`` and a teacher position ``j`` take
    part only when both are response tokens (``student_mask[i]`` and
    ``teacher_mask[j]``); attention is not causal and each sample attends only
    to its own sequences. Rows of non-response positions get all-zero weights,
    so padding and prompt positions are never attended and never attend.
    ``σ(x)`` is one scalar, unbiased standard deviation of the entries of
    ``x`` (torch's ``x.std()``): with ``std_over='all'`` over the whole padded
    ``[B, T_t, ·]`` tensor, as DSKD's release does
    (``dual_space_kd_with_cross_model_attention.py`` lines 108-110), so prompt
    and padding positions count (the caller decides what they hold; DSKD looks
    up token id 0 there for the index embeddings); with ``'response'`` over the
    teacher's response positions only, which does not depend on the amount of
    padding. Everything is computed in float32.

    Gradients: the teacher hidden states and all index embeddings are
    stop-gradient; ``P_query`` is trained through both outputs (the scores are
    shared), ``P_t2s`` through ``t2s_hidden``, ``P_s2t`` and the student hidden
    states through ``s2t_hidden``.

    Args:
      params: the projector pytree (shapes from :func:`cma_param_shapes`).
      student_input_embeds: ``[B, Ts, ds]`` student embeddings of the input tokens.
      student_target_embeds: ``[B, Ts, ds]`` student embeddings of the next-token targets.
      student_hidden: ``[B, Ts, ds]`` student last hidden states (after the final norm).
      student_mask: ``[B, Ts]`` student response-token mask.
      teacher_input_embeds: ``[B, Tt, dt]`` teacher embeddings of its input tokens.
      teacher_target_embeds: ``[B, Tt, dt]`` teacher embeddings of its targets.
      teacher_hidden: ``[B, Tt, dt]`` teacher last hidden states.
      teacher_mask: ``[B, Tt]`` teacher response-token mask.
      std_over: ``'all'`` or ``'response'``, the positions of the scalar stds.

    Returns:
      A :class:`CrossModelAttentionOutput`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jdistill.losses import cma_param_shapes, cross_model_attention
      >>> ks = jax.random.split(jax.random.key(0), 7)
      >>> params = {name: {"kernel": 0.3 * jax.random.normal(ks[0], shape), "bias": jnp.zeros(shape[1])}
      ...           for name, shape in cma_param_shapes(student_dim=4, teacher_dim=6).items()}
      >>> out = cross_model_attention(
      ...     params,
      ...     student_input_embeds=jax.random.normal(ks[1], (2, 5, 4)),
      ...     student_target_embeds=jax.random.normal(ks[2], (2, 5, 4)),
      ...     student_hidden=jax.random.normal(ks[3], (2, 5, 4)),
      ...     student_mask=jnp.ones((2, 5), bool),
      ...     teacher_input_embeds=jax.random.normal(ks[4], (2, 7, 6)),
      ...     teacher_target_embeds=jax.random.normal(ks[5], (2, 7, 6)),
      ...     teacher_hidden=jax.random.normal(ks[6], (2, 7, 6)),
      ...     teacher_mask=jnp.ones((2, 7), bool))
      >>> out.t2s_hidden.shape, out.s2t_hidden.shape, out.t2s_weights.shape
      ((2, 5, 4), (2, 7, 6), (2, 5, 7))
    """
    f32 = jnp.float32
    sg = jax.lax.stop_gradient
    batch, student_len, student_dim = student_hidden.shape
    teacher_batch, teacher_len, teacher_dim = teacher_hidden.shape
    if teacher_batch != batch:
        raise ValueError(f"cross_model_attention: batch sizes differ (student {batch}, teacher {teacher_batch}).")
    for label, arr, want in (
        ("student_input_embeds", student_input_embeds, (batch, student_len, student_dim)),
        ("student_target_embeds", student_target_embeds, (batch, student_len, student_dim)),
        ("teacher_input_embeds", teacher_input_embeds, (batch, teacher_len, teacher_dim)),
        ("teacher_target_embeds", teacher_target_embeds, (batch, teacher_len, teacher_dim)),
        ("student_mask", student_mask, (batch, student_len)),
        ("teacher_mask", teacher_mask, (batch, teacher_len)),
    ):
        if tuple(arr.shape) != want:
            raise ValueError(f"cross_model_attention: {label} has shape {tuple(arr.shape)}, expected {want}.")
    query_shape = tuple(params["query"]["kernel"].shape)
    if query_shape != (2 * student_dim, 2 * teacher_dim):
        raise ValueError(
            f"cross_model_attention: params['query']['kernel'] has shape {query_shape}, expected "
            f"{(2 * student_dim, 2 * teacher_dim)} for student dim {student_dim}, teacher dim {teacher_dim}."
        )

    if std_over not in STD_OVER:
        raise ValueError(f"cross_model_attention: std_over must be one of {STD_OVER}, got {std_over!r}.")
    student_mask = student_mask.astype(bool)
    teacher_mask = teacher_mask.astype(bool)
    std_mask_BxT = teacher_mask if std_over == "response" else jnp.ones_like(teacher_mask)
    index_s_BxSx2ds = sg(jnp.concatenate([student_input_embeds, student_target_embeds], axis=-1).astype(f32))
    index_t_BxTx2dt = sg(jnp.concatenate([teacher_input_embeds, teacher_target_embeds], axis=-1).astype(f32))
    h_t_BxTxdt = sg(teacher_hidden.astype(f32))
    e_target_t_BxTxdt = sg(teacher_target_embeds.astype(f32))

    query_BxSx2dt = _linear(params["query"], index_s_BxSx2ds)
    key_BxTx2dt = index_t_BxTx2dt / masked_std(index_t_BxTx2dt, std_mask_BxT)
    value_t_BxTxds = _linear(
        params["t2s"],
        h_t_BxTxdt / masked_std(h_t_BxTxdt, std_mask_BxT)
        + e_target_t_BxTxdt / masked_std(e_target_t_BxTxdt, std_mask_BxT),
    )
    value_s_BxSxdt = _linear(params["s2t"], student_hidden.astype(f32))

    scores_BxSxT = jnp.einsum("bsd,btd->bst", query_BxSx2dt, key_BxTx2dt) / math.sqrt(2 * teacher_dim)
    pair_mask_BxSxT = student_mask[:, :, None] & teacher_mask[:, None, :]
    # log_probs gives -inf outside the mask and an all -inf row where nothing is
    # attendable, so the exponentials are exact zeros there.
    t2s_weights = jnp.exp(dist.log_probs(scores_BxSxT, where=pair_mask_BxSxT))
    s2t_weights = jnp.exp(
        dist.log_probs(jnp.swapaxes(scores_BxSxT, 1, 2), where=jnp.swapaxes(pair_mask_BxSxT, 1, 2))
    )
    t2s_hidden = jnp.einsum("bst,btd->bsd", t2s_weights, value_t_BxTxds)
    s2t_hidden = jnp.einsum("bts,bsd->btd", s2t_weights, value_s_BxSxdt)
    return CrossModelAttentionOutput(t2s_hidden, s2t_hidden, t2s_weights, s2t_weights)
