r"""Relation-based KD: match the similarity structure of representations, not the representations.

Each model's representations are compared with each other *within the same
model*; the student's relation matrix is pulled towards the teacher's. Only
relations within one model enter, so the hidden sizes may differ and no
projector is needed. Three formulations:

* **cosine MSE** (:func:`token_relation_distance`, :func:`sample_relation_distance`;
  jdistill's default): squared difference of cosine-similarity matrices;
* **RKD** (Park et al., *Relational Knowledge Distillation*, CVPR 2019):
  :func:`rkd_distance_loss` (mean-normalised pairwise Euclidean distances) and
  :func:`rkd_angle_loss` (cosines of the angles of point triplets), each with
  the Huber loss;
* **SP** (Tung & Mori, *Similarity-Preserving Knowledge Distillation*, ICCV 2019):
  :func:`similarity_preserving_loss`, squared difference of row-normalised Gram
  matrices.

What a *sample* (a point of the relation) is, for LLM sequences:

* token relations: the points are the selected (response) tokens of one
  sequence, ``[B, T, D]`` with a ``[B, T]`` mask — one relation matrix per sequence;
* sample relations: the points are the sequences' mean-pooled response
  representations (:func:`masked_mean_pool`) across the batch — one relation
  matrix over the batch: pass ``[1, B, D]`` with the ``[1, B]`` mask of the
  sequences that have response tokens (the paper setting of RKD and SP, where
  the points are the examples of a mini-batch).

The RKD and SP kernels take ``[G, N, D]`` (``G`` independent groups of ``N``
points) and a ``[G, N]`` mask, and return ``[G, N]`` per-point values: point
``i``'s row of the relation loss, zero for unselected points. The mean of the
selected points' values is the paper's loss for the group, and
:func:`jdistill.losses.token_mean` under the mask gives the token-weighted mean
over groups.

The cosine-MSE kernels, per selected token ``i`` (``n_b`` the sequence's number
of selected tokens):

.. math:: \ell_{b,i} = \frac{1}{n_b} \sum_{j} m_{b,j}\,\big(S^s_{b,ij} - S^t_{b,ij}\big)^2,
          \qquad S_{b,ij} = \hat h_{b,i} \cdot \hat h_{b,j}

and per sequence over the batch of pooled representations:

.. math:: \ell_{b} = \frac{1}{n} \sum_{c} v_c\,\big(G^s_{bc} - G^t_{bc}\big)^2,
          \qquad G_{bc} = \hat g_b \cdot \hat g_c

Everything is computed in float32; a zero vector stays zero (similarity 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jdistill.losses import explicit_axes
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
    return explicit_axes.einsum("...nd,...md->...nm", unit, unit, preferred_element_type=jnp.float32)


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
    total_BxD = explicit_axes.einsum("bt,btd->bd", weights_BxT, hidden_BxTxD.astype(jnp.float32))
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
    row_sum_BxT = explicit_axes.einsum("bij,bj->bi", jnp.square(diff_BxTxT), weights_BxT)
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
    row_sum_B = explicit_axes.einsum("bc,c->b", jnp.square(diff_BxB), weights_B)
    return row_sum_B / jnp.maximum(jnp.sum(weights_B), 1.0)


# ----------------------------------------------------------------------------------------------
# RKD (Park et al., CVPR 2019) and similarity-preserving KD (Tung & Mori, ICCV 2019).

# Elements of one [vertices, B, N, N] block of the angle kernel (64 MiB in float32).
_ANGLE_BLOCK_ELEMENTS = 1 << 24


def _check_groups(student_GxNxDs: Array, teacher_GxNxDt: Array, mask_GxN, kernel: str) -> Array:
    """Validates the shapes and returns the float32 0/1 selection weights ``[G, N]``."""
    s_shape, t_shape = jnp.shape(student_GxNxDs), jnp.shape(teacher_GxNxDt)
    if len(s_shape) != 3 or len(t_shape) != 3 or s_shape[:2] != t_shape[:2]:
        raise ValueError(
            f"{kernel}: expected student [G, N, D_s] and teacher [G, N, D_t] points over the same [G, N] "
            f"(groups, points), got {s_shape} and {t_shape}."
        )
    if mask_GxN is None:
        return jnp.ones(s_shape[:2], jnp.float32)
    if jnp.shape(mask_GxN) != s_shape[:2]:
        raise ValueError(f"{kernel}: mask {jnp.shape(mask_GxN)} must have the [G, N] shape {s_shape[:2]}.")
    return (jnp.asarray(mask_GxN) > 0).astype(jnp.float32)


def _huber(x: Array, delta: float) -> Array:
    """Huber loss of a difference: ``x²/2`` for ``|x| <= delta``, else ``delta (|x| - delta/2)``."""
    abs_x = jnp.abs(x)
    quadratic = jnp.minimum(abs_x, delta)
    return 0.5 * jnp.square(quadratic) + delta * (abs_x - quadratic)


def _centred_gram_and_distances(x_GxNxD: Array, weights_GxN: Array) -> tuple[Array, Array]:
    """Gram matrix and pairwise Euclidean distances of the selected points, ``[G, N, N]`` each.

    The points are centred on their selected mean first (distances and angles do
    not change) so that the Gram identity ``|x_i - x_j|² = G_ii + G_jj - 2 G_ij``
    does not cancel large common components (LLM hidden states carry some), and
    the Gram matrix is taken at full float32 precision (no TF32/bf16 passes) for
    the same reason. Unselected points are set to zero; squared distances below
    ``1e-12`` (the diagonal exactly) count as 0, with zero gradient.
    """
    selected = weights_GxN[..., None] > 0
    x = jnp.where(selected, x_GxNxD.astype(jnp.float32), 0.0)
    centre_GxD = masked_mean_pool(x, weights_GxN)
    x = jnp.where(selected, x - centre_GxD[:, None, :], 0.0)
    gram_GxNxN = explicit_axes.einsum(
        "gnd,gmd->gnm", x, x, precision=jax.lax.Precision.HIGHEST, preferred_element_type=jnp.float32
    )
    sq_norms_GxN = jnp.diagonal(gram_GxNxN, axis1=1, axis2=2)
    squared_GxNxN = sq_norms_GxN[:, :, None] + sq_norms_GxN[:, None, :] - 2.0 * gram_GxNxN
    positive = squared_GxNxN > 1e-12
    distances_GxNxN = jnp.where(positive, jnp.sqrt(jnp.where(positive, squared_GxNxN, 1.0)), 0.0)
    return gram_GxNxN, distances_GxNxN


def _safe_divide(numerator: Array, denominator: Array) -> Array:
    """``numerator / denominator`` where the denominator is positive, else 0 (finite gradients)."""
    positive = denominator > 0
    return jnp.where(positive, numerator / jnp.where(positive, denominator, 1.0), 0.0)


def _row_mean(values_GxNxN: Array, weights_GxN: Array) -> Array:
    """``m_i (1/n) Σ_j m_j v_ij``: each selected point's mean over the selected columns."""
    count_Gx1 = jnp.sum(weights_GxN, axis=-1, keepdims=True)
    row_sum_GxN = explicit_axes.einsum("gij,gj->gi", values_GxNxN, weights_GxN)
    return weights_GxN * row_sum_GxN / jnp.maximum(count_Gx1, 1.0)


def rkd_distance_loss(student_GxNxDs: Array, teacher_GxNxDt: Array, mask_GxN: Array | None = None, *,
                      delta: float = 1.0) -> Array:
    r"""RKD distance-wise loss (Park et al., *Relational Knowledge Distillation*, CVPR 2019, Eq. 4-5).

    Within each group, the pairwise Euclidean distances of the selected points,
    normalised by their mean over the distinct pairs, are matched with the Huber
    loss :math:`l_\delta` (smooth L1; the paper's ``δ = 1``):

    .. math:: \psi_D(x_i, x_j) = \frac{\|x_i - x_j\|_2}{\mu}, \qquad
              \mu = \frac{1}{n(n-1)} \sum_{i \ne j} m_i m_j \|x_i - x_j\|_2

    .. math:: \ell_i = \frac{m_i}{n} \sum_j m_j\, l_\delta\big(\psi_D(s_i, s_j) - \psi_D(t_i, t_j)\big)

    The mean of the selected :math:`\ell_i` is the authors' code's loss
    (``smooth_l1_loss`` averaged over all ``n²`` pairs, the zero diagonal
    included). The student's ``μ`` takes gradient, as in that code. Invariant to
    translation, rotation and scale of either model's points; the widths may
    differ. Groups with fewer than two selected points give 0.

    Args:
      student_GxNxDs: ``[G, N, D_s]`` student points (e.g. ``[B, T, D]`` hidden
        states for token relations, or ``[1, B, D]`` pooled states for sample relations).
      teacher_GxNxDt: ``[G, N, D_t]`` teacher points for the same ``[G, N]``.
      mask_GxN: nonzero entries select the points that take part (e.g. the
        response mask); ``None`` selects all.
      delta: the Huber threshold ``δ``.

    Returns:
      ``[G, N]`` float32 per-point values, 0 for unselected points (reduce with
      :func:`jdistill.losses.token_mean` under the same mask).

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import rkd_distance_loss
      >>> t = jnp.array([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])  # right isosceles triangle
      >>> float(jnp.abs(rkd_distance_loss(3.0 * t + 1.0, t)).max())  # same shape, scaled and moved
      0.0
      >>> s = jnp.array([[[0.0], [1.0], [2.0]]])  # a line: d01, d02, d12 = (1, 2, 1) / mean 4/3
      >>> # teacher: (1, 1, √2) / mean (2 + √2)/3; row 0 = (l(0.75 - 0.8787) + l(1.5 - 0.8787)) / 3
      >>> [round(float(v), 4) for v in rkd_distance_loss(s, t)[0]]
      [0.0671, 0.0432, 0.1048]
    """
    weights_GxN = _check_groups(student_GxNxDs, teacher_GxNxDt, mask_GxN, "rkd_distance_loss")
    pair_weights_GxNxN = weights_GxN[:, :, None] * weights_GxN[:, None, :]
    count_G = jnp.sum(weights_GxN, axis=-1)
    num_pairs_Gx1x1 = jnp.maximum(count_G * (count_G - 1.0), 1.0)[:, None, None]

    def potentials(x_GxNxD):
        _, distances_GxNxN = _centred_gram_and_distances(x_GxNxD, weights_GxN)
        mean_Gx1x1 = jnp.sum(distances_GxNxN * pair_weights_GxNxN, axis=(1, 2), keepdims=True) / num_pairs_Gx1x1
        return _safe_divide(distances_GxNxN, mean_Gx1x1)

    huber_GxNxN = _huber(potentials(student_GxNxDs) - potentials(teacher_GxNxDt), delta)
    return _row_mean(huber_GxNxN, weights_GxN)


def _vertex_cosines(gram_GxNxN: Array, distances_GxNxN: Array, j: Array) -> Array:
    """``[G, N, N]`` cosines of the angles ``∠ x_k x_j x_l`` at vertex ``j`` (0 where ``k`` or ``l`` is ``j``)."""
    gram_row_GxN = gram_GxNxN[:, j, :]
    gram_jj_G = gram_GxNxN[:, j, j]
    # <x_k - x_j, x_l - x_j> = G_kl - G_jk - G_jl + G_jj
    inner_GxNxN = gram_GxNxN - gram_row_GxN[:, :, None] - gram_row_GxN[:, None, :] + gram_jj_G[:, None, None]
    dist_row_GxN = distances_GxNxN[:, j, :]
    return _safe_divide(inner_GxNxN, dist_row_GxN[:, :, None] * dist_row_GxN[:, None, :])


def rkd_angle_loss(student_GxNxDs: Array, teacher_GxNxDt: Array, mask_GxN: Array | None = None, *,
                   delta: float = 1.0) -> Array:
    r"""RKD angle-wise loss (Park et al., *Relational Knowledge Distillation*, CVPR 2019, Eq. 6-7).

    Within each group, the cosines of the angles formed by triplets of selected
    points are matched with the Huber loss :math:`l_\delta` (the paper's ``δ = 1``).
    Point ``j``'s value collects the angles with vertex ``j``:

    .. math:: \psi_A(x_k, x_j, x_l) = \langle e^{jk}, e^{jl} \rangle, \qquad
              e^{jk} = \frac{x_k - x_j}{\|x_k - x_j\|_2} \quad (0 \text{ if } x_k = x_j)

    .. math:: \ell_j = \frac{m_j}{n^2} \sum_{k,l} m_k m_l\,
              l_\delta\big(\psi_A(s_k, s_j, s_l) - \psi_A(t_k, t_j, t_l)\big)

    The mean of the selected :math:`\ell_j` is the authors' code's loss
    (``smooth_l1_loss`` averaged over all ``n³`` triplets, the degenerate ones,
    which are 0 for both models, included). Invariant to translation, rotation
    and scale; the widths may differ.

    The cosines come from the Gram matrix of the centred points,
    :math:`\langle x_k - x_j, x_l - x_j\rangle = G_{kl} - G_{jk} - G_{jl} + G_{jj}`,
    so no ``[N, N, D]`` difference tensor is formed; vertices are processed in
    blocks of at most ``2**24`` angle cosines (rematerialised in the backward
    pass), so memory is ``O(G·N²)`` plus one block, for ``O(G·N³)`` work.

    Args:
      student_GxNxDs: ``[G, N, D_s]`` student points (``[B, T, D]`` token
        relations, ``[1, B, D]`` sample relations).
      teacher_GxNxDt: ``[G, N, D_t]`` teacher points for the same ``[G, N]``.
      mask_GxN: nonzero entries select the points that take part; ``None`` selects all.
      delta: the Huber threshold ``δ``.

    Returns:
      ``[G, N]`` float32 per-vertex values, 0 for unselected points.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import rkd_angle_loss
      >>> t = jnp.array([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])  # angles 90°, 45°, 45°
      >>> s = jnp.array([[[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]])  # a line: angles 180°, 0°, 0°
      >>> [round(float(v), 4) for v in rkd_angle_loss(s, t)[0]]  # 2 · l(-1 - 0) / 9; 2 · l(1 - 0.7071) / 9
      [0.1111, 0.0095, 0.0095]
    """
    weights_GxN = _check_groups(student_GxNxDs, teacher_GxNxDt, mask_GxN, "rkd_angle_loss")
    g, n = weights_GxN.shape
    gram_s, dist_s = _centred_gram_and_distances(student_GxNxDs, weights_GxN)
    gram_t, dist_t = _centred_gram_and_distances(teacher_GxNxDt, weights_GxN)
    pair_weights_GxNxN = weights_GxN[:, :, None] * weights_GxN[:, None, :]

    @jax.checkpoint
    def vertex_sum(j):
        diff_GxNxN = _vertex_cosines(gram_s, dist_s, j) - _vertex_cosines(gram_t, dist_t, j)
        return jnp.sum(_huber(diff_GxNxN, delta) * pair_weights_GxNxN, axis=(1, 2))

    block = max(1, min(n, _ANGLE_BLOCK_ELEMENTS // max(g * n * n, 1)))
    sums_NxG = jax.lax.map(vertex_sum, jnp.arange(n), batch_size=block)
    count_Gx1 = jnp.sum(weights_GxN, axis=-1, keepdims=True)
    return weights_GxN * sums_NxG.T / jnp.maximum(jnp.square(count_Gx1), 1.0)


def similarity_preserving_loss(student_GxNxDs: Array, teacher_GxNxDt: Array, mask_GxN: Array | None = None) -> Array:
    r"""Similarity-preserving KD (Tung & Mori, *Similarity-Preserving Knowledge Distillation*, ICCV 2019, Eq. 2-4).

    Within each group, the Gram matrix of the selected points with each row
    L2-normalised, :math:`\tilde G = X X^\top,\ G_{i\cdot} = \tilde G_{i\cdot} / \|\tilde G_{i\cdot}\|_2`,
    is matched by squared error:

    .. math:: \ell_i = \frac{m_i}{n} \sum_j m_j \big(G^s_{ij} - G^t_{ij}\big)^2

    so the mean of the selected :math:`\ell_i` is the paper's
    :math:`\frac{1}{n^2}\|G^t - G^s\|_F^2`. Unselected points are left out of the
    Gram matrix (and of the row norms). The widths may differ; a zero row stays
    zero (finite gradients). Not translation invariant (raw activations, as the paper).

    Args:
      student_GxNxDs: ``[G, N, D_s]`` student points (``[B, T, D]`` token
        relations, ``[1, B, D]`` sample relations).
      teacher_GxNxDt: ``[G, N, D_t]`` teacher points for the same ``[G, N]``.
      mask_GxN: nonzero entries select the points that take part; ``None`` selects all.

    Returns:
      ``[G, N]`` float32 per-point values, 0 for unselected points.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import similarity_preserving_loss
      >>> s = jnp.array([[[1.0, 0.0], [0.0, 1.0]]])  # orthogonal: G = identity rows
      >>> t = jnp.array([[[1.0], [1.0]]])  # parallel: G rows (1, 1) / √2
      >>> [round(float(v), 4) for v in similarity_preserving_loss(s, t)[0]]  # ((1 - 0.7071)² + 0.7071²) / 2
      [0.2929, 0.2929]
    """
    weights_GxN = _check_groups(student_GxNxDs, teacher_GxNxDt, mask_GxN, "similarity_preserving_loss")

    def normalised_gram(x_GxNxD):
        x = jnp.where(weights_GxN[..., None] > 0, x_GxNxD.astype(jnp.float32), 0.0)
        return safe_normalize(explicit_axes.einsum("gnd,gmd->gnm", x, x, preferred_element_type=jnp.float32))

    diff_GxNxN = normalised_gram(student_GxNxDs) - normalised_gram(teacher_GxNxDt)
    return _row_mean(jnp.square(diff_GxNxN), weights_GxN)
