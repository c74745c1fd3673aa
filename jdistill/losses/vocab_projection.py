r"""Teacher logits carried into the student's vocabulary through a vocabulary map (MinED).

Minimum-edit-distance alignment across vocabularies, from FuseLLM (Wan et al.,
*Knowledge Fusion of Large Language Models*, ICLR 2024), as the DSKD paper's
MinED baseline computes it (Zhang et al., *Dual-Space Knowledge Distillation
for Large Language Models*, EMNLP 2024; release ``code/criterions/min_edit_dis_kld.py``,
``transform_step_logits_fast``). A vocabulary map ``σ: V_s → V_t ∪ {⊥}`` gives
each student id a teacher id, or none (``-1``); building it (edit distances of
token strings) and aligning the two sequences are host-side work
(:mod:`jdistill.data.alignment_mined`). Here, the teacher's logits at the aligned
position are carried into the student's vocabulary and compared with forward
KL; unaligned positions fall back to the gold token:

.. math::
    \tilde z_{v} = \begin{cases} z^t_{σ(v)} & σ(v) ≠ ⊥ \\ -\infty & \text{otherwise} \end{cases},
    \qquad
    \mathrm{KD}_i = \begin{cases}
        \mathrm{KL}\big(\mathrm{softmax}(\tilde z_i/τ) \,\|\, \mathrm{softmax}(z^s_i/τ)\big) & i \text{ aligned} \\
        -\log \mathrm{softmax}(z^s_i/τ)_{y_i} & \text{otherwise}
    \end{cases}
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jdistill.losses import explicit_axes
from jdistill.losses.cross_entropy import token_cross_entropy
from jdistill.losses.divergences import forward_kl

Array = jax.Array


def project_teacher_logits(teacher_logits_BxSxVt: Array, student_to_teacher_Vs) -> Array:
    r"""Teacher logits carried into the student's vocabulary through ``σ``.

    .. math:: \tilde z_v = z_{σ(v)} \ (σ(v) ≥ 0), \qquad \tilde z_v = -\infty \ (σ(v) = -1)

    Several student ids may take the same teacher id; a teacher id no student id
    takes is dropped.

    Args:
      teacher_logits_BxSxVt: ``[..., V_t]`` teacher logits.
      student_to_teacher_Vs: ``[V_s]`` int, a teacher id per student id, -1 for none.

    Returns:
      ``[..., V_s]`` float32 logits (``-inf`` where unmapped).

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import project_teacher_logits
      >>> project_teacher_logits(jnp.array([1.0, 2.0, 3.0]), jnp.array([2, -1, 0])).tolist()
      [3.0, -inf, 1.0]
    """
    index_Vs = jnp.asarray(student_to_teacher_Vs)
    gathered = explicit_axes.take(teacher_logits_BxSxVt.astype(jnp.float32), jnp.maximum(index_Vs, 0), axis=-1)
    return jnp.where(index_Vs >= 0, gathered, -jnp.inf)


def mined_kd(student_logits_BxSxV: Array, projected_logits_BxSxV: Array, targets_BxS: Array, aligned_BxS: Array,
             temperature=1.0) -> Array:
    r"""Per-token MinED term: forward KL to the projected teacher where aligned, else gold-token NLL.

    .. math:: \mathrm{KD}_i = \begin{cases}
                  \mathrm{KL}\big(\mathrm{softmax}(\tilde z_i/τ) \,\|\, \mathrm{softmax}(z^s_i/τ)\big) & a_i > 0 \\
                  -\log \mathrm{softmax}(z^s_i/τ)_{y_i} & \text{otherwise}
              \end{cases}

    (the one-hot gold target at unaligned positions is DSKD's,
    ``min_edit_dis_kld.py`` lines 196-207). No ``τ²`` factor.

    Args:
      student_logits_BxSxV: ``[..., V]`` student logits.
      projected_logits_BxSxV: ``[..., V]`` teacher logits in the student's vocabulary
        (:func:`project_teacher_logits`; may hold ``-inf``).
      targets_BxS: ``[...]`` gold next tokens.
      aligned_BxS: ``[...]`` 1 where the teacher position is used.
      temperature: positive scalar dividing both logits.

    Returns:
      ``[...]`` float32 per-token values, not reduced.

    Example:
      >>> import jax.numpy as jnp
      >>> from jdistill.losses import mined_kd
      >>> s = jnp.log(jnp.array([[0.75, 0.25], [0.75, 0.25]]))
      >>> t = jnp.array([[0.0, -jnp.inf], [0.0, -jnp.inf]])  # the teacher puts all mass on token 0
      >>> aligned, gold = jnp.array([1.0, 0.0]), jnp.array([1, 1])
      >>> [round(float(x), 4) for x in mined_kd(s, t, gold, aligned)]  # -ln 0.75 (KL), -ln 0.25 (NLL)
      [0.2877, 1.3863]
    """
    kl_BxS = forward_kl(student_logits_BxSxV, projected_logits_BxSxV, temperature=temperature)
    nll_BxS = token_cross_entropy(student_logits_BxSxV, targets_BxS, temperature=temperature)
    return jnp.where(aligned_BxS > 0, kl_BxS, nll_BxS)
