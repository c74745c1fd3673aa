"""DSKD's linear projectors between the student's and the teacher's hidden spaces.

``P_t2s: d_t → d_s`` carries teacher hidden states into the student's space
(read out by the student head), ``P_s2t: d_s → d_t`` carries student hidden
states into the teacher's space (read out by the frozen teacher head). Both are
trainable method parameters ``{'kernel': [d_in, d_out], 'bias': [d_out]}`` in
float32, trained by their own optimizer group (``optimizer.method_learning_rate``).

``method.projector_init`` chooses how they start: ``'default'`` draws both
uniformly (DSKD); ``'pseudo_inverse'`` sets ``P_t2s`` to DSKDv2's bias-free
least-squares map between the two LM heads (:func:`pseudo_inverse_t2s_kernel`),
so that the student head reads teacher logits out of projected teacher states
from the first step (``P_s2t`` keeps the default draw).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jdistill import losses

Array = jax.Array


def init_linear(key: Array, fan_in: int, fan_out: int) -> dict:
    """A linear layer drawn uniformly in ``±1/sqrt(fan_in)`` (PyTorch's default, as in DSKD)."""
    bound = 1.0 / math.sqrt(fan_in)
    k_kernel, k_bias = jax.random.split(key)
    return {
        "kernel": jax.random.uniform(k_kernel, (fan_in, fan_out), jnp.float32, -bound, bound),
        "bias": jax.random.uniform(k_bias, (fan_out,), jnp.float32, -bound, bound),
    }


def init_dual_space_projectors(key: Array, *, student_dim: int, teacher_dim: int) -> dict:
    """``{'t2s': [d_t, d_s] linear, 's2t': [d_s, d_t] linear}``."""
    k_t2s, k_s2t = jax.random.split(key)
    return {
        "t2s": init_linear(k_t2s, teacher_dim, student_dim),
        "s2t": init_linear(k_s2t, student_dim, teacher_dim),
    }


def init_cross_model_attention_params(key: Array, *, student_dim: int, teacher_dim: int) -> dict:
    """Initial parameters of DSKD-CMA's three projectors (:func:`jdistill.losses.cross_model_attention`).

    ``{'query': [2d_s, 2d_t], 't2s': [d_t, d_s], 's2t': [d_s, d_t]}`` linear
    layers, each drawn by :func:`init_linear` from its own split of ``key``.
    """
    shapes = losses.cma_param_shapes(student_dim, teacher_dim)
    keys = jax.random.split(key, len(shapes))
    return {name: init_linear(k, *shapes[name]) for name, k in zip(shapes, keys)}


def apply_linear(params: dict, x_BxTxD: Array) -> Array:
    """``x W + b`` in float32 (``x W`` for a bias-free layer, one without a ``'bias'`` entry)."""
    out = x_BxTxD.astype(jnp.float32) @ params["kernel"].astype(jnp.float32)
    if "bias" in params:
        out = out + params["bias"].astype(jnp.float32)
    return out


def pseudo_inverse_t2s_kernel(student_head_DsxV: Array, teacher_head_DtxV: Array) -> Array:
    r"""DSKDv2's bias-free t2s initialisation from the two LM heads.

    Chooses ``K`` (``[d_t, d_s]``) so that the projected teacher state read out
    by the student head reproduces the teacher's logits in the least-squares
    sense, ``h_t K W_s ≈ h_t W_t`` for all ``h_t``:

    .. math:: K = W_t \, W_s^{+}, \qquad W_s^{+} = \mathrm{pinv}(W_s) \in \mathbb{R}^{V \times d_s}

    Both heads are ``[d, V]`` over the same (shared) vocabulary rows.
    """
    w_s = jnp.asarray(student_head_DsxV, jnp.float32)
    w_t = jnp.asarray(teacher_head_DtxV, jnp.float32)
    if w_s.shape[1] != w_t.shape[1]:
        raise ValueError(f"pseudo_inverse_t2s_kernel: heads cover {w_s.shape[1]} vs {w_t.shape[1]} vocabulary rows.")
    return w_t @ jnp.linalg.pinv(w_s)


PROJECTOR_INITS = ("default", "pseudo_inverse")


def init_projectors(key: Array, student, teacher, *, how: str, vocab_size: int | None = None) -> dict:
    """DSKD's projectors for two loaded models, initialised as ``how`` says (see the module docstring).

    Args:
      key: PRNG key.
      student, teacher: the models (``.config.hidden_size``, ``lm_head_weight()`` ``[d, V]``).
      how: ``'default'`` or ``'pseudo_inverse'``.
      vocab_size: the shared vocabulary rows of both heads used by the pseudo-inverse
        (``None``: all rows; a padded head is cut to it).
    """
    if how not in PROJECTOR_INITS:
        raise ValueError(f"method.projector_init must be one of {PROJECTOR_INITS}, got {how!r}.")
    params = init_dual_space_projectors(
        key, student_dim=student.config.hidden_size, teacher_dim=teacher.config.hidden_size
    )
    if how == "pseudo_inverse":
        w_s = jnp.asarray(student.lm_head_weight())[:, :vocab_size]
        w_t = jnp.asarray(teacher.lm_head_weight())[:, :vocab_size]
        params["t2s"] = {"kernel": pseudo_inverse_t2s_kernel(w_s, w_t)}
    return params
