r"""Multi-teacher distillation: several frozen teachers, each with a weight, in one step.

The run's teachers are ``teacher.path`` (index 0) and every entry of
``teacher.extra_paths`` (indices 1, 2, ...), each with its own tokenizer; the
engine runs all of them in the jitted step under stop-gradient and hands the
loss a tuple of their views. ``method.weights`` gives one weight ``w_k >= 0``
per teacher (in that order, summing to 1; empty = equal weights).

Teachers are of two kinds:

* *same-vocabulary* teachers (``S``: tokenizer equal to the student's) run on
  the student's tokens; their per-token distribution is
  ``p_k = softmax(z_k/τ)`` over the student's vocabulary rows;
* at most one *other* vocabulary (``X``: every teacher whose tokenizer differs
  from the student's must share it) runs on the ``teacher_*`` arrays (the data
  is tokenized twice). Its distribution lives over another vocabulary, so it is
  never mixed with the others: it always contributes its own ULD term
  (Boizard et al., 2024; :mod:`jdistill.methods.uld`), the ``i``-th student
  response token paired with the ``i``-th teacher response token, the sorted
  probability vectors compared:
  ``ULD_k,i = Σ_r |sort↓(q_i)_r − sort↓(p_k,j(i))_r|``.

With ``q = softmax(z_s/τ)``, ``D`` the divergence ``method.divergence`` (with
its own arguments: ``skew_alpha``, ``jsd_beta``, ``akl_mu``), ``M`` the response
tokens, ``U`` the ULD-paired ones and ``N`` the global student response-token
count, ``method.combination`` selects how the targets are combined per token:

* ``'sum'`` — per-teacher divergences, weighted and summed:

  .. math:: \mathrm{KD} = \frac{1}{N}\Big[\sum_{k∈S} w_k \sum_{i∈M} D(p_{k,i}, q_i)
            + \sum_{k∈X} w_k \sum_{i∈U} \mathrm{ULD}_{k,i}\Big]

* ``'mixture'`` (default) — one target per token, the weighted mixture of the
  same-vocabulary teachers' distributions (:func:`jdistill.losses.mixture_log_probs`,
  computed in log space), with the other-vocabulary teachers' ULD terms added
  as in ``'sum'``:

  .. math:: \bar p_i = \sum_{k∈S} \frac{w_k}{W_S}\, p_{k,i},\quad W_S = \sum_{k∈S} w_k,\qquad
            \mathrm{KD} = \frac{1}{N}\Big[W_S \sum_{i∈M} D(\bar p_i, q_i)
            + \sum_{k∈X} w_k \sum_{i∈U} \mathrm{ULD}_{k,i}\Big]

``L = (1 − kd_rate) · CE(z_s, y) + kd_rate · KD``. A teacher of weight 0 drops
out of both rules exactly: with weights ``(1, 0, ...)`` the loss is vanilla KD
(:mod:`jdistill.methods.kd`) with the first teacher. With one
same-vocabulary teacher the two rules agree; with several, ``'mixture'``
asks the student to cover the averaged distribution (for forward KL,
``Σ w_k KL(p_k‖q) = KL(p̄‖q) + Σ w_k KL(p_k‖p̄)``: the sum adds a constant-in-``q``
disagreement term and the same gradient; for other divergences they differ).

Metrics: ``ce``, ``kd`` and, per teacher, ``kd_teacher<k>``: its own unweighted
term (``Σ_i D(p_k,i, q_i)/N`` or ``Σ_i ULD_k,i/N``), whatever the rule.

Settings: ``kd_rate`` 0.5 and ``temperature`` 2.0 as jdistill's KD (DSKD's
baseline scripts), forward KL. The losses are computed from the logits (no
fused path: ``method.fused`` must stay ``'off'``). The engine reports each
teacher's parameter memory and forward FLOPs and time per step in the run log
and the report (``jdistill.engine.teacher_costs``).

Differences from the literature: multi-teacher KD papers (e.g. Wu et al.,
2021; You et al., 2017) average the teachers' soft targets with fixed or
learned weights; here the weights are fixed settings, and a teacher over
another vocabulary is handled by ULD rather than left out.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from jdistill import losses
from jdistill.methods import terms
from jdistill.methods.base import Method, ModelFacts
from jdistill.methods.settings import KDSettings, check_choice, setting

COMBINATIONS = ("mixture", "sum")
WEIGHT_SUM_TOLERANCE = 1e-6


def parse_weights(text: str) -> tuple[float, ...]:
    """``'0.5, 0.5'`` → ``(0.5, 0.5)``; ``''`` → ``()`` (equal weights). Errors name ``method.weights``."""
    if not str(text).strip():
        return ()
    try:
        weights = tuple(float(part) for part in str(text).split(","))
    except ValueError:
        raise ValueError(f"method.weights must be comma-separated numbers (one per teacher), got {text!r}.") from None
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"method.weights must all be finite and >= 0, got {text!r}.")
    if abs(sum(weights) - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise ValueError(f"method.weights must sum to 1, got {text!r} (sum {sum(weights):g}).")
    return weights


@dataclasses.dataclass(frozen=True)
class Settings(KDSettings):
    """jdistill's KD defaults (forward KL, kd_rate 0.5, τ 2) with the teachers' weights and combination rule."""

    temperature: float = setting(2.0, "Divides student and every teacher's logits (as jdistill's KD: DSKD's KD_TEMP).")
    fused: str = setting("off", "Only 'off': the teacher mixture is computed from the full logits.")
    weights: str = setting("", "Comma-separated weight per teacher (teacher.path first, then teacher.extra_paths), >= 0, summing to 1; empty = equal.")
    combination: str = setting("mixture", "'mixture' (D of the weighted mixture of same-vocabulary teachers) | 'sum' (weighted sum of per-teacher D).")

    def __post_init__(self):
        super().__post_init__()
        check_choice("fused", self.fused, ("off",))
        check_choice("combination", self.combination, COMBINATIONS)
        parse_weights(self.weights)


def teacher_weights(settings: Settings, count: int) -> tuple[float, ...]:
    """The weight of each of ``count`` teachers: ``method.weights``, or equal weights when it is empty."""
    weights = parse_weights(settings.weights)
    if not weights:
        return (1.0 / count,) * count
    if len(weights) != count:
        raise ValueError(
            f"method.weights has {len(weights)} entries but the run has {count} teacher(s) (teacher.path, then "
            "teacher.extra_paths): give one weight per teacher."
        )
    return weights


def make(settings: Settings, facts: ModelFacts = ModelFacts()) -> Method:
    shares = facts.teachers_share_vocabulary
    if shares:
        teacher_weights(settings, len(shares))  # a count mismatch fails before any weight is loaded
    divergence = terms.bound_divergence(settings)
    temperature = float(settings.temperature)
    rows = terms.vocab_rows(settings, facts)

    def loss(method_params, batch, student, teachers, ctx):
        del method_params
        views = tuple(teachers) if isinstance(teachers, (tuple, list)) else (teachers,)
        weights = teacher_weights(settings, len(views))
        same = shares or (True,) * len(views)
        if len(same) != len(views):
            raise ValueError(f"{len(views)} teacher views but facts describe {len(same)} teachers.")
        ce = terms.response_cross_entropy(student, batch, ctx)
        z_s_BxTxV = student.output.logits[..., :rows].astype(jnp.float32)
        scaled_s_BxTxV = z_s_BxTxV / temperature
        mask_BxT = batch["loss_mask"]
        own, same_logits, same_weights = {}, [], []
        kd = jnp.zeros((), jnp.float32)
        for k, (view, weight) in enumerate(zip(views, weights)):
            z_t = jax.lax.stop_gradient(view.output.logits)
            if same[k]:
                z_t_BxTxV = z_t[..., :rows]
                d_BxT = divergence(z_s_BxTxV, z_t_BxTxV, temperature=temperature)
                own[f"kd_teacher{k}"] = losses.token_mean(d_BxT, mask_BxT, normalizer=ctx.num_tokens)
                if weight > 0:
                    same_logits.append(z_t_BxTxV)
                    same_weights.append(weight)
                    if settings.combination == "sum":
                        kd = kd + weight * own[f"kd_teacher{k}"]
            else:
                z_t_BxSxVt = losses.gather_positions(z_t, batch["uld_teacher_index"])
                uld_BxS = losses.uld_distance(z_s_BxTxV, z_t_BxSxVt, temperature)
                own[f"kd_teacher{k}"] = losses.token_mean(uld_BxS, batch["uld_mask"], normalizer=ctx.num_tokens)
                if weight > 0:
                    kd = kd + weight * own[f"kd_teacher{k}"]
        if settings.combination == "mixture" and same_weights:
            total = sum(same_weights)
            log_mix_BxTxV = losses.mixture_log_probs(
                same_logits, [w / total for w in same_weights], temperature=temperature)
            # Both sides already at temperature τ: the student's scaled logits and the mixture's log-probabilities.
            d_BxT = divergence(scaled_s_BxTxV, log_mix_BxTxV, temperature=1.0)
            kd = kd + total * losses.token_mean(d_BxT, mask_BxT, normalizer=ctx.num_tokens)
        return terms.mix(settings, ce, kd), {"ce": ce, "kd": kd, **own}

    cross = bool(shares) and not all(shares)
    return Method(name="multi_teacher", loss=loss, cross_vocabulary=cross, teacher_list=True)
