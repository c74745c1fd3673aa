r"""Relation-based KD: match the similarity structure of representations, not the representations.

Each model's representations are L2-normalised and compared with each other
*within the same model* (cosine-similarity matrices); the loss is the squared
difference between the student's and the teacher's matrices (similarity-preserving
KD, Tung & Mori, 2019; relational KD, Park et al., 2019). Only inner products within
one model enter, so the hidden sizes may differ and no projector is needed.

* Token relations: within each sequence, the ``[T, T]`` similarities of the
  selected (response) tokens;

  .. math:: \ell_{b,i} = \frac{1}{n_b} \sum_{j} m_{b,j}\,\big(S^s_{b,ij} - S^t_{b,ij}\big)^2,
            \qquad S_{b,ij} = \hat h_{b,i} \cdot \hat h_{b,j}

  per selected token ``i`` (``n_b`` the sequence's number of selected tokens);
* sample relations: the ``[B, B]`` similarities of the sequences' mean-pooled
  representations (:func:`masked_mean_pool`), over the sequences that have
  selected tokens;

  .. math:: \ell_{b} = \frac{1}{n} \sum_{c} v_c\,\big(G^s_{bc} - G^t_{bc}\big)^2,
            \qquad G_{bc} = \hat g_b \cdot \hat g_c

Vectors are normalised in float32; a zero vector stays zero (similarity 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jdistill.losses.features import safe_normalize

Array = jax.Array


def cosine_similarity_matrix(x_NxD: Array) -> Array:
    """``[..., N, D]`` → ``[..., N, N]`` cosine similarities of the rows (float32).

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import cosine_similarity_matrix
      >>> [[round(float(v), 4) for v in row] for row in cosine_similarity_matrix(jnp.array([[2.0, 0.0], [1.0, 1.0]]))]
      [[1.0, 0.7071], [0.7071, 1.0]]
    """
    unit = safe_normalize(x_NxD)
    return jnp.einsum("...nd,...md->...nm", unit, unit, preferred_element_type=jnp.float32)


def masked_mean_pool(hidden_BxTxD: Array, mask_BxT: Array) -> Array:
    """Mean of each sequence's selected token vectors: ``[B, T, D]`` → ``[B, D]`` (0 if none selected).

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import masked_mean_pool
      >>> h = jnp.array([[[1.0], [3.0], [9.0]]])
      >>> masked_mean_pool(h, jnp.array([[1, 1, 0]])).tolist()
      [[2.0]]
    """
    weights_BxT = mask_BxT.astype(jnp.float32)
    total_BxD = jnp.einsum("bt,btd->bd", weights_BxT, hidden_BxTxD.astype(jnp.float32))
    count_B = jnp.sum(weights_BxT, axis=-1, keepdims=True)
    return total_BxD / jnp.maximum(count_B, 1.0)


def token_relation_distance(student_hidden_BxTxDs: Array, teacher_hidden_BxTxDt: Array, mask_BxT: Array) -> Array:
    r"""Per-token squared distance between the two models' token-similarity rows.

    .. math:: \ell_{b,i} = \frac{1}{n_b} \sum_j m_{b,j} (S^s_{b,ij} - S^t_{b,ij})^2

    Args:
      student_hidden_BxTxDs: ``[B, T, D_s]`` student hidden states.
      teacher_hidden_BxTxDt: ``[B, T, D_t]`` teacher hidden states (same tokens).
      mask_BxT: the tokens that take part (e.g. the response mask).

    Returns:
      ``[B, T]`` float32 values (meaningful where ``mask`` is set; reduce with
      :func:`jdistill.losses.token_mean` under the same mask).

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import token_relation_distance
      >>> s = jnp.array([[[1.0, 0.0], [0.0, 1.0]]])  # orthogonal tokens
      >>> t = jnp.array([[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])  # identical tokens
      >>> token_relation_distance(s, t, jnp.array([[1, 1]])).tolist()  # (0 + 1) / 2 per token
      [[0.5, 0.5]]
    """
    if jnp.shape(student_hidden_BxTxDs)[:2] != jnp.shape(teacher_hidden_BxTxDt)[:2]:
        raise ValueError(
            f"token_relation_distance: student {jnp.shape(student_hidden_BxTxDs)} and teacher "
            f"{jnp.shape(teacher_hidden_BxTxDt)} hidden states must cover the same [B, T] tokens."
        )
    weights_BxT = mask_BxT.astype(jnp.float32)
    diff_BxTxT = cosine_similarity_matrix(student_hidden_BxTxDs) - cosine_similarity_matrix(teacher_hidden_BxTxDt)
    row_sum_BxT = jnp.einsum("bij,bj->bi", jnp.square(diff_BxTxT), weights_BxT)
    count_Bx1 = jnp.sum(weights_BxT, axis=-1, keepdims=True)
    return row_sum_BxT / jnp.maximum(count_Bx1, 1.0)


def sample_relation_distance(student_pooled_BxDs: Array, teacher_pooled_BxDt: Array, valid_B: Array) -> Array:
    r"""Per-sample squared distance between the two models' sample-similarity rows.

    .. math:: \ell_b = \frac{1}{n} \sum_c v_c (G^s_{bc} - G^t_{bc})^2, \qquad n = \sum_c v_c

    Args:
      student_pooled_BxDs: ``[B, D_s]`` one student vector per sequence.
      teacher_pooled_BxDt: ``[B, D_t]`` one teacher vector per sequence.
      valid_B: the sequences that take part (e.g. those with response tokens).

    Returns:
      ``[B]`` float32 values (meaningful where ``valid``; sum them under
      ``valid`` and divide by the number of sequences).

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import sample_relation_distance
      >>> s = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> t = jnp.array([[1.0], [1.0]])
      >>> sample_relation_distance(s, t, jnp.array([True, True])).tolist()
      [0.5, 0.5]
    """
    if jnp.shape(student_pooled_BxDs)[0] != jnp.shape(teacher_pooled_BxDt)[0]:
        raise ValueError(
            f"sample_relation_distance: student {jnp.shape(student_pooled_BxDs)} and teacher "
            f"{jnp.shape(teacher_pooled_BxDt)} must have one row per sequence each."
        )
    weights_B = valid_B.astype(jnp.float32)
    diff_BxB = cosine_similarity_matrix(student_pooled_BxDs) - cosine_similarity_matrix(teacher_pooled_BxDt)
    row_sum_B = jnp.square(diff_BxB) @ weights_B
    return row_sum_B / jnp.maximum(jnp.sum(weights_B), 1.0)
