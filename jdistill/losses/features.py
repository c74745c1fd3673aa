"""Per-token distances between student and teacher hidden states (feature-based KD).

FitNets-style feature distillation (Romero et al., *FitNets: Hints for Thin Deep
Nets*, ICLR 2015) matches intermediate representations of the two models. The
kernels here (:func:`fitnets_hint_loss`, the paper's ``½‖·‖²``;
:func:`feature_mse`; :func:`feature_cosine_distance`) share one contract::

    f(student_features, teacher_features) -> per-token values

* ``student_features`` and ``teacher_features`` are ``[..., D]`` arrays of the
  same shape (project the student into the teacher's width first when the
  hidden sizes differ), any floating dtype (computed in float32);
* the result has shape ``features.shape[:-1]``, float32, not reduced: combine
  it with :func:`jdistill.losses.token_mean`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def _check_pair(student: Array, teacher: Array, kernel: str) -> None:
    if jnp.shape(student) != jnp.shape(teacher):
        raise ValueError(
            f"{kernel}: student features {jnp.shape(student)} and teacher features {jnp.shape(teacher)} "
            "must have the same shape; project the student into the teacher's width first."
        )
    if jnp.ndim(student) < 1:
        raise ValueError(f"{kernel}: features need a feature axis, got a scalar.")


def feature_mse(student_features: Array, teacher_features: Array) -> Array:
    r"""Mean squared error over the feature axis.

    .. math:: d(s, t) = \frac{1}{D} \sum_{k=1}^{D} (s_k - t_k)^2

    Args:
      student_features: ``[..., D]`` (projected) student hidden states.
      teacher_features: ``[..., D]`` teacher hidden states.

    Returns:
      ``[...]`` float32 per-token distances.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import feature_mse
      >>> float(feature_mse(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0])))  # (1 + 4) / 2
      2.5
    """
    _check_pair(student_features, teacher_features, "feature_mse")
    diff = student_features.astype(jnp.float32) - teacher_features.astype(jnp.float32)
    return jnp.mean(jnp.square(diff), axis=-1)


def fitnets_hint_loss(student_features: Array, teacher_features: Array) -> Array:
    r"""FitNets' hint loss: half the squared L2 distance over the feature axis.

    Romero et al., *FitNets: Hints for Thin Deep Nets*, ICLR 2015, Eq. 3:
    :math:`\mathcal{L}_{HT} = \tfrac12 \|u_h - r(v_g)\|^2`, with ``u_h`` the
    teacher's hint layer and ``r(v_g)`` the student's guided layer through a
    learned regressor ``r`` (pass the regressed student state here):

    .. math:: d(s, t) = \frac{1}{2} \sum_{k=1}^{D} (s_k - t_k)^2

    It is ``D/2`` times :func:`feature_mse`: the sum over the feature axis grows
    with the width, so weigh it accordingly.

    Args:
      student_features: ``[..., D]`` regressed (projected) student hidden states.
      teacher_features: ``[..., D]`` teacher hidden states.

    Returns:
      ``[...]`` float32 per-token distances.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import fitnets_hint_loss
      >>> float(fitnets_hint_loss(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0])))  # (1 + 4) / 2
      2.5
      >>> float(fitnets_hint_loss(jnp.array([3.0, 0.0, 0.0]), jnp.array([0.0, 0.0, 1.0])))  # (9 + 1) / 2
      5.0
    """
    _check_pair(student_features, teacher_features, "fitnets_hint_loss")
    diff = student_features.astype(jnp.float32) - teacher_features.astype(jnp.float32)
    return 0.5 * jnp.sum(jnp.square(diff), axis=-1)


def safe_normalize(x: Array, eps: float = 1e-12) -> Array:
    """``x / ||x||`` over the last axis in float32; a zero vector stays zero (finite gradient)."""
    x = x.astype(jnp.float32)
    squared = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(squared, eps * eps))


def feature_cosine_distance(student_features: Array, teacher_features: Array) -> Array:
    r"""One minus the cosine similarity of the two feature vectors.

    .. math:: d(s, t) = 1 - \frac{s \cdot t}{\|s\| \, \|t\|}

    Scale-free, in ``[0, 2]``. A zero vector counts as orthogonal to everything
    (distance 1), with finite gradients.

    Args:
      student_features: ``[..., D]`` (projected) student hidden states.
      teacher_features: ``[..., D]`` teacher hidden states.

    Returns:
      ``[...]`` float32 per-token distances.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import feature_cosine_distance
      >>> float(feature_cosine_distance(jnp.array([1.0, 0.0]), jnp.array([3.0, 0.0])))
      0.0
      >>> float(feature_cosine_distance(jnp.array([1.0, 0.0]), jnp.array([0.0, 2.0])))
      1.0
    """
    _check_pair(student_features, teacher_features, "feature_cosine_distance")
    cosine = jnp.sum(safe_normalize(student_features) * safe_normalize(teacher_features), axis=-1)
    return 1.0 - cosine


# Feature distances selectable by name in configs (method.feature_distance).
FEATURE_DISTANCES = {"mse": feature_mse, "cosine": feature_cosine_distance, "fitnets": fitnets_hint_loss}


def get_feature_distance(name: str):
    """Returns the feature distance registered under ``name`` ('mse', 'cosine' or 'fitnets')."""
    try:
        return FEATURE_DISTANCES[name]
    except KeyError:
        raise ValueError(f"Unknown feature distance {name!r}; choose one of {sorted(FEATURE_DISTANCES)}.") from None
