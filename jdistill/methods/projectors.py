"""DSKD's linear projectors between the student's and the teacher's hidden spaces.

``P_t2s: d_t → d_s`` carries teacher hidden states into the student's space
(read out by the student head), ``P_s2t: d_s → d_t`` carries student hidden
states into the teacher's space (read out by the frozen teacher head). Both are
trainable method parameters ``{'kernel': [d_in, d_out], 'bias': [d_out]}`` in
float32, trained by their own optimizer group (``optimizer.method_learning_rate``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

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


def apply_linear(params: dict, x_BxTxD: Array) -> Array:
    """``x W + b`` in float32."""
    return x_BxTxD.astype(jnp.float32) @ params["kernel"].astype(jnp.float32) + params["bias"].astype(jnp.float32)


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
