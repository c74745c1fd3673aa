r"""Universal Logit Distillation (ULD): a distance between vocabularies of any sizes.

Boizard et al., *Towards Cross-Tokenizer Distillation: the Universal Logit
Distillation Loss for LLMs*, 2024 (arXiv:2402.12030). Both probability vectors
are sorted in decreasing order and the shorter one is zero-padded to the longer
vocabulary, so the distance compares only the *shapes* of the two
distributions, never which token holds which mass:

.. math:: \mathrm{ULD}(q, p) = \sum_{k} \big|\, \mathrm{sort}{\downarrow}(q)_k - \mathrm{sort}{\downarrow}(p)_k \big|,
          \qquad q = \mathrm{softmax}(z_s/τ),\ p = \mathrm{softmax}(z_t/τ)

It is 0 exactly when one distribution is a permutation of the other (up to
zero entries) and at most 2. The pairing of student and teacher positions is the
caller's: ULD pairs the ``i``-th response tokens (:func:`gather_positions` picks
the teacher rows); the exact-token-alignment kernels
(:mod:`jdistill.losses.span_alignment`) reuse :func:`sorted_l1_distance` on the
unmatched part of two vocabularies.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jdistill.losses import explicit_axes
from jdistill.losses.distributions import log_probs

Array = jax.Array


def sorted_probs_desc(logits_BxTxV: Array, temperature=1.0) -> Array:
    r"""``softmax(z/τ)`` sorted in decreasing order along the vocabulary axis, float32.

    Args:
      logits_BxTxV: ``[..., V]`` logits, any float dtype.
      temperature: positive scalar dividing the logits.

    Returns:
      ``[..., V]`` float32 probabilities, largest first.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import sorted_probs_desc
      >>> [round(float(v), 3) for v in sorted_probs_desc(jnp.log(jnp.array([0.2, 0.5, 0.3])))]
      [0.5, 0.3, 0.2]
    """
    probs = jnp.exp(log_probs(logits_BxTxV, temperature=temperature))
    return -explicit_axes.sort(-probs, axis=-1)


def pad_vocabulary(probs_BxTxV: Array, size: int) -> Array:
    """Zero-pads the last (vocabulary) axis to ``size`` entries.

    Args:
      probs_BxTxV: ``[..., V]`` values.
      size: static target length, ``>= V``.

    Returns:
      ``[..., size]``: the values followed by ``size - V`` zeros.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import pad_vocabulary
      >>> pad_vocabulary(jnp.array([[0.5, 0.25]]), 4).tolist()
      [[0.5, 0.25, 0.0, 0.0]]
    """
    extra = size - probs_BxTxV.shape[-1]
    return jnp.pad(probs_BxTxV, [(0, 0)] * (probs_BxTxV.ndim - 1) + [(0, extra)])


def sorted_l1_distance(student_probs, teacher_probs) -> Array:
    r"""ULD's ``Σ_r |sort↓(q)_r − sort↓(p)_r|`` between probability vectors of any lengths.

    .. math:: D(q, p) = \sum_{r} \big| \mathrm{sort}{\downarrow}(q)_r - \mathrm{sort}{\downarrow}(p)_r \big|
              \quad \text{(the shorter vector zero-padded)}

    The vectors need not sum to 1 (the exact-alignment distance applies it to
    the unmatched part of two vocabularies).

    Args:
      student_probs: ``[..., n]`` non-negative values.
      teacher_probs: ``[..., m]`` non-negative values, the same leading axes.

    Returns:
      ``[...]`` per-row distances.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import sorted_l1_distance
      >>> q, p = jnp.array([0.1, 0.3]), jnp.array([0.2, 0.05, 0.1])  # |.3 - .2| + |.1 - .1| + |0 - .05|
      >>> round(float(sorted_l1_distance(q, p)), 4)
      0.15
    """
    q = -explicit_axes.sort(-student_probs, axis=-1)
    p = -explicit_axes.sort(-teacher_probs, axis=-1)
    size = max(q.shape[-1], p.shape[-1])
    return jnp.sum(jnp.abs(pad_vocabulary(q, size) - pad_vocabulary(p, size)), axis=-1)


def uld_distance(student_logits_BxSxVs: Array, teacher_logits_BxSxVt: Array, temperature=1.0) -> Array:
    r"""Per-token ULD between a student and a teacher distribution over different vocabularies.

    .. math:: \mathrm{ULD} = \sum_{k} \big|\, \mathrm{sort}{\downarrow}(q)_k - \mathrm{sort}{\downarrow}(p)_k \big|,
              \qquad q = \mathrm{softmax}(z_s/τ),\ p = \mathrm{softmax}(z_t/τ)

    (Boizard et al., 2024, Eq. 4; the shorter vocabulary zero-padded.) No
    ``τ²`` factor. Gradients reach both sides; stop the teacher's yourself.

    Args:
      student_logits_BxSxVs: ``[..., V_s]`` student logits.
      teacher_logits_BxSxVt: ``[..., V_t]`` teacher logits at the paired positions
        (same leading axes; ``V_t`` may differ from ``V_s``).
      temperature: positive scalar dividing both logits.

    Returns:
      ``[...]`` float32 per-token distances in ``[0, 2]``, not reduced.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import uld_distance
      >>> s = jnp.log(jnp.array([0.5, 0.3, 0.2]))
      >>> t = jnp.log(jnp.array([0.2, 0.0, 0.5, 0.3]))  # the same shape, permuted, one more entry
      >>> round(float(uld_distance(s, t)), 4)
      0.0
      >>> t = jnp.log(jnp.array([0.5, 0.25, 0.25]))  # |.5 - .5| + |.3 - .25| + |.2 - .25|
      >>> round(float(uld_distance(s, t)), 4)
      0.1
    """
    q = sorted_probs_desc(student_logits_BxSxVs, temperature)
    p = sorted_probs_desc(teacher_logits_BxSxVt, temperature)
    size = max(q.shape[-1], p.shape[-1])
    return jnp.sum(jnp.abs(pad_vocabulary(q, size) - pad_vocabulary(p, size)), axis=-1)


def gather_positions(values_BxTx_: Array, index_BxS: Array) -> Array:
    """Per batch row, the rows of ``values`` at the given positions: ``values[b, index[b, s]]``.

    How the cross-vocabulary losses pair each student position with a teacher
    position (ULD: the ``i``-th response tokens; MinED: the edit-distance
    alignment).

    Args:
      values_BxTx_: ``[B, T, ...]`` per-position values (e.g. teacher logits).
      index_BxS: ``[B, S]`` int positions in ``[0, T)``.

    Returns:
      ``[B, S, ...]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import gather_positions
      >>> values = jnp.array([[10, 11, 12], [20, 21, 22]])
      >>> gather_positions(values, jnp.array([[2, 0], [1, 1]])).tolist()
      [[12, 10], [21, 21]]
    """
    return jax.vmap(lambda v, i: v[i])(values_BxTx_, index_BxS)
