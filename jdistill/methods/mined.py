r"""MinED: minimum-edit-distance alignment across vocabularies (FuseLLM; DSKD's MinED baseline).

On the host (:func:`jdistill.data.alignment_mined.mined_extras`, in the data
pipeline): the input tokens of the positions that predict response tokens are
aligned between the two tokenizations by dynamic programming over token-string
edit distances (space markers deleted, ``method.mined_markers``); student
position ``i`` takes teacher position ``j(i)`` when it is matched to that one
teacher token only (``method.mined_one_to_one``) and the teacher's token maps
onto the student's (``mined_mask``), as DSKD's ``transform_step_logits_fast``.
A vocabulary map ``σ: V_s → V_t ∪ {⊥}`` (each teacher id goes to its closest
student id by edit distance of the token forms; ``σ(v)`` is the closest
teacher id mapping onto ``v``, ``⊥`` when none does) is computed once per
tokenizer pair and cached on disk.

In the step, the teacher's logits at ``j(i)`` are carried into the student's
vocabulary and compared with forward KL; unaligned positions fall back to the
gold token (a one-hot target, i.e. cross-entropy at temperature ``τ``):

.. math::
    \tilde z_{i,v} = \begin{cases} z^t_{j(i),\,σ(v)} & σ(v) ≠ ⊥ \\ -\infty & \text{otherwise} \end{cases},
    \qquad
    \mathrm{KD}_i = \begin{cases}
        \mathrm{KL}\big(\mathrm{softmax}(\tilde z_i/τ) \,\|\, \mathrm{softmax}(z^s_i/τ)\big) & i \text{ aligned} \\
        -\log \mathrm{softmax}(z^s_i/τ)_{y_i} & \text{otherwise}
    \end{cases}

``L = (1 - kd_rate) · CE(z_s, y) + kd_rate · Σ_i M_i KD_i / N`` with ``M`` the
response mask and ``N`` the global student response-token count. The student
logits are compared over the tokenizer's ``vocab_size`` rows (a padded head is
truncated). The vocabulary map enters the jitted loss as a constant
(:class:`jdistill.methods.host_constants.HostConstants`), never as a trainable
parameter.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jdistill import losses
from jdistill.data import alignment_mined
from jdistill.methods import terms
from jdistill.methods.base import Method, ModelFacts
from jdistill.methods.host_constants import HostConstants
from jdistill.methods.settings import KDSettings, check_choice, setting
from jdistill.methods.uld import gather_positions


def project_teacher_logits(teacher_logits_BxSxVt, student_to_teacher_Vs):
    r"""Teacher logits carried into the student's vocabulary through ``σ``.

    .. math:: \tilde z_v = z_{σ(v)} \ (σ(v) ≥ 0), \qquad \tilde z_v = -\infty \ (σ(v) = -1)

    Args:
      teacher_logits_BxSxVt: ``[..., V_t]`` teacher logits.
      student_to_teacher_Vs: ``[V_s]`` int, a teacher id per student id, -1 for none.

    Returns:
      ``[..., V_s]`` float32 logits (``-inf`` where unmapped).

    Example:
      >>> import jax.numpy as jnp
      >>> project_teacher_logits(jnp.array([1.0, 2.0, 3.0]), jnp.array([2, -1, 0])).tolist()
      [3.0, -inf, 1.0]
    """
    index_Vs = jnp.asarray(student_to_teacher_Vs)
    gathered = jnp.take(teacher_logits_BxSxVt.astype(jnp.float32), jnp.maximum(index_Vs, 0), axis=-1)
    return jnp.where(index_Vs >= 0, gathered, -jnp.inf)


def mined_kd(student_logits_BxSxV, projected_logits_BxSxV, targets_BxS, aligned_BxS, temperature):
    r"""Per-token MinED term: forward KL to the projected teacher where aligned, else gold-token NLL.

    Args:
      student_logits_BxSxV: ``[..., V]`` student logits.
      projected_logits_BxSxV: ``[..., V]`` teacher logits in the student's vocabulary (may hold ``-inf``).
      targets_BxS: ``[...]`` gold next tokens.
      aligned_BxS: ``[...]`` 1 where the teacher position is used.
      temperature: positive scalar dividing both logits.

    Returns:
      ``[...]`` float32 per-token values.

    Example:
      >>> import jax.numpy as jnp
      >>> s = jnp.log(jnp.array([[0.5, 0.5]]))
      >>> t = jnp.array([[0.0, -jnp.inf]])  # the teacher puts all mass on token 0
      >>> [round(float(x), 4) for x in mined_kd(s, t, jnp.array([1]), jnp.array([1.0]), 1.0)]  # ln 2
      [0.6931]
    """
    kl_BxS = losses.forward_kl(student_logits_BxSxV, projected_logits_BxSxV, temperature=temperature)
    nll_BxS = losses.token_cross_entropy(student_logits_BxSxV, targets_BxS, temperature=temperature)
    return jnp.where(aligned_BxS > 0, kl_BxS, nll_BxS)


def fit_vocabulary(student_to_teacher_V: np.ndarray, size: int) -> np.ndarray:
    """The map cut or extended (with -1, unmapped) to ``size`` student rows."""
    out = np.full(size, -1, np.int32)
    n = min(size, len(student_to_teacher_V))
    out[:n] = student_to_teacher_V[:n]
    return out


@dataclasses.dataclass(frozen=True)
class Settings(KDSettings):
    """DSKD's MinED baseline (``scripts/gpt2/minedit_gpt2_base.sh``): kd_rate 0.5, τ 2."""

    temperature: float = setting(2.0, "Divides student and teacher logits (DSKD's KD_TEMP).")
    vocab_map_dir: str = setting("", "Cache of vocabulary maps per tokenizer pair; empty = $JDISTILL_CACHE/vocab_maps.")
    mined_markers: str = setting("delete", "Space markers in the edit-distance cost: 'delete' (DSKD) | 'space'.")
    mined_one_to_one: str = setting("student", "Aligned positions: 'student' (DSKD: one teacher token) | 'both'.")

    def __post_init__(self):
        super().__post_init__()
        check_choice("mined_markers", self.mined_markers, alignment_mined.MARKER_RULES)
        check_choice("mined_one_to_one", self.mined_one_to_one, alignment_mined.ONE_TO_ONE_RULES)


def make(settings: Settings, facts: ModelFacts = ModelFacts()) -> Method:
    temperature = float(settings.temperature)
    vocab_size = terms.vocab_rows(settings, facts)
    cache_dir = settings.vocab_map_dir  # empty: alignment_mined.default_cache_dir()
    markers, rule = settings.mined_markers, settings.mined_one_to_one
    constants = HostConstants("mined")

    def prepare_examples(examples, context):
        s_tok, t_tok = context.student_tokenizer, context.teacher_tokenizer
        constants.ensure(
            alignment_mined.vocab_pair_key(s_tok, t_tok),
            lambda: dataclasses.asdict(alignment_mined.cached_vocab_map(s_tok, t_tok, cache_dir)),
        )
        t2s = constants["teacher_to_student"]
        return [
            dataclasses.replace(
                e, extras={**e.extras, **alignment_mined.mined_extras(e, s_tok, t_tok, t2s, markers=markers, rule=rule)}
            )
            for e in examples
        ]

    def loss(method_params, batch, student, teacher, ctx):
        del method_params
        s2t = constants["student_to_teacher"]
        z_s_BxSxV = student.output.logits[..., :vocab_size]
        s2t_V = fit_vocabulary(s2t, z_s_BxSxV.shape[-1])
        ce = terms.response_cross_entropy(student, batch, ctx)
        z_t_BxSxVt = gather_positions(jax.lax.stop_gradient(teacher.output.logits), batch["mined_teacher_index"])
        projected_BxSxV = project_teacher_logits(z_t_BxSxVt, s2t_V)
        kd_BxS = mined_kd(z_s_BxSxV, projected_BxSxV, batch["targets"], batch["mined_mask"], temperature)
        kd = losses.token_mean(kd_BxS, batch["loss_mask"], normalizer=ctx.num_tokens)
        aligned = losses.token_mean(batch["mined_mask"], batch["loss_mask"], normalizer=ctx.num_tokens)
        return terms.mix(settings, ce, kd), {"ce": ce, "kd": kd, "aligned": aligned}

    return Method(name="mined", loss=loss, cross_vocabulary=True, prepare_examples=prepare_examples)
