r"""Relation-based KD: match the relation structure of the two models' representations.

For each mapped pair of hidden states ``(s, t)`` (:mod:`jdistill.methods.layer_map`;
``method.layer_map``, by default only the last hidden states), relation matrices
are built *within* each model and compared (:mod:`jdistill.losses.relations`), so
the hidden sizes may differ and no projector is needed. Relations are taken at
two levels, with the same formulation:

* token relations — the points are the response tokens of one sequence (one
  relation matrix per sequence); the per-token values ``ℓ_bi`` are summed over the
  response tokens and divided by ``N``:
  ``L_tok = (1/|pairs|) Σ_pairs (1/N) Σ_{b,i} M_bi ℓ_bi``;
* sample relations — the points are the sequences' mean-pooled response
  representations across the micro-batch (one relation matrix over the batch):
  ``L_smp = (1/|pairs|) Σ_pairs (1/B_glob) Σ_b v_b ℓ_b``.

``method.relation_loss`` picks the formulation of ``ℓ``:

* ``'cosine_mse'`` (default): squared difference of cosine-similarity rows,
  ``ℓ_i = (1/n) Σ_j (S^s_ij − S^t_ij)²`` (:func:`jdistill.losses.token_relation_distance`);
* ``'rkd'`` — Park et al., *Relational Knowledge Distillation*, CVPR 2019:
  ``ℓ = rkd_distance_weight · ℓ_D + rkd_angle_weight · ℓ_A`` with the Huber
  distance-wise and angle-wise losses (:func:`jdistill.losses.rkd_distance_loss`,
  :func:`jdistill.losses.rkd_angle_loss`); a zero weight skips its term (the
  token-level angle term costs ``O(T³)`` per sequence). RKD says nothing about
  fewer than three points, so its sample term needs at least three sequences
  with response tokens per micro-batch;
* ``'sp'`` — Tung & Mori, *Similarity-Preserving Knowledge Distillation*, ICCV
  2019: squared difference of row-normalised Gram rows
  (:func:`jdistill.losses.similarity_preserving_loss`).

Sample relations are formed within each *micro-batch* (all its rows, across
data-parallel devices): under gradient accumulation a sequence is compared with
the other sequences of its own micro-batch only, so the term depends on
``train.grad_accum`` (the token term does not). ``N`` and ``B_glob`` are the
global response-token and sequence counts.

Combined with the response-based term of :mod:`jdistill.methods.kd`:

.. math:: L = (1 - kd\_rate)\,CE + kd\_rate\,D(p \| q) + w_{tok} L_{tok} + w_{smp} L_{smp}

(``method.token_relation_weight``, ``method.sample_relation_weight``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jdistill import losses
from jdistill.methods import kd
from jdistill.methods.base import Method, ModelFacts
from jdistill.methods.settings import KDSettings, setting
from jdistill.methods.layer_map import layer_pairs

RELATION_LOSSES = ("cosine_mse", "rkd", "sp")


def relation_components(relation_loss: str, rkd_weights: dict) -> dict:
    """``{component name: (weight, kernel)}`` of one formulation; kernels map ``[G, N, D]`` points to ``[G, N]``.

    ``rkd_weights``: ``{'rkd_distance': w_D, 'rkd_angle': w_A}`` (read for ``'rkd'``;
    components of weight 0 are left out).
    """
    if relation_loss == "cosine_mse":
        return {"cosine_mse": (1.0, losses.token_relation_distance)}
    if relation_loss == "sp":
        return {"sp": (1.0, losses.similarity_preserving_loss)}
    if relation_loss == "rkd":
        kernels = {"rkd_distance": losses.rkd_distance_loss, "rkd_angle": losses.rkd_angle_loss}
        return {name: (rkd_weights[name], kernels[name]) for name in kernels if rkd_weights[name] > 0}
    raise ValueError(f"method.relation_loss must be one of {RELATION_LOSSES}, got {relation_loss!r}.")


def relation_terms(pairs, student_hidden_LxBxTxDs, teacher_hidden_LxBxTxDt, mask_BxT, ctx, components):
    """``{'token_relation', 'sample_relation'}``, each averaged over the layer pairs.

    ``components`` (:func:`relation_components`) are weighted and summed into each
    level's value; with more than one component, each also appears unweighted as
    ``'token_<name>'`` / ``'sample_<name>'``.
    """
    valid_B = jnp.any(mask_BxT > 0, axis=-1)
    totals = {f"{level}_{name}": 0.0 for level in ("token", "sample") for name in components}
    for s, t in pairs:
        h_s_BxTxDs = student_hidden_LxBxTxDs[s]
        h_t_BxTxDt = jax.lax.stop_gradient(teacher_hidden_LxBxTxDt[t])
        pooled_s_1xBxDs = losses.masked_mean_pool(h_s_BxTxDs, mask_BxT)[None]
        pooled_t_1xBxDt = losses.masked_mean_pool(h_t_BxTxDt, mask_BxT)[None]
        for name, (_, kernel) in components.items():
            token_BxT = kernel(h_s_BxTxDs, h_t_BxTxDt, mask_BxT)
            totals[f"token_{name}"] += losses.token_mean(token_BxT, mask_BxT, normalizer=ctx.num_tokens)
            sample_B = kernel(pooled_s_1xBxDs, pooled_t_1xBxDt, valid_B[None])[0]
            totals[f"sample_{name}"] += jnp.sum(jnp.where(valid_B, sample_B, 0.0)) / ctx.num_sequences
    terms = {key: value / len(pairs) for key, value in totals.items()}
    out = {
        f"{level}_relation": sum(weight * terms[f"{level}_{name}"] for name, (weight, _) in components.items())
        for level in ("token", "sample")
    }
    if len(components) > 1:
        out.update(terms)
    return out


@dataclasses.dataclass(frozen=True)
class Settings(KDSettings):
    """Token- and sample-relation transfer on top of vanilla KD."""

    layer_map: str = setting("last", "Layer pairs: 'uniform' | 'last' | 'S:T,...' (0 = embeddings).")
    token_relation_weight: float = setting(1.0, "Weight of the token-to-token relation term.")
    sample_relation_weight: float = setting(1.0, "Weight of the sample-to-sample relation term.")
    relation_loss: str = setting("cosine_mse", "'cosine_mse' | 'rkd' (Park et al.: distance + angle) | 'sp' (Tung & Mori).")
    rkd_distance_weight: float = setting(1.0, "RKD: weight of the distance term (the authors' metric-learning 1).")
    rkd_angle_weight: float = setting(2.0, "RKD: weight of the angle term (the authors' 2); 0 skips its O(T^3) cost.")

    def __post_init__(self):
        super().__post_init__()
        if self.token_relation_weight < 0 or self.sample_relation_weight < 0:
            raise ValueError("method.token_relation_weight and method.sample_relation_weight must be >= 0.")
        if self.relation_loss not in RELATION_LOSSES:
            raise ValueError(f"method.relation_loss must be one of {RELATION_LOSSES}, got {self.relation_loss!r}.")
        weights = (self.rkd_distance_weight, self.rkd_angle_weight)
        if self.relation_loss == "rkd" and (min(weights) < 0 or max(weights) == 0):
            raise ValueError(
                "method.rkd_distance_weight and method.rkd_angle_weight must be >= 0 and not both 0 with "
                f"method.relation_loss='rkd', got {weights[0]} and {weights[1]}."
            )


def make(settings: Settings, facts: ModelFacts = ModelFacts()) -> Method:
    response = kd.make(settings, facts)
    token_weight = float(settings.token_relation_weight)
    sample_weight = float(settings.sample_relation_weight)
    rkd_weights = {"rkd_distance": float(settings.rkd_distance_weight), "rkd_angle": float(settings.rkd_angle_weight)}
    components = relation_components(settings.relation_loss, rkd_weights)

    def init_params(key, student, teacher):
        del key
        layer_pairs(settings.layer_map, student.config.num_layers, teacher.config.num_layers)  # fails early if bad
        return {}

    def loss(method_params, batch, student, teacher, ctx):
        del method_params
        total, metrics = response.loss(None, batch, student, teacher, ctx)
        pairs = layer_pairs(settings.layer_map, student.model.config.num_layers, teacher.model.config.num_layers)
        terms = relation_terms(
            pairs, student.output.all_hidden_states, teacher.output.all_hidden_states, batch["loss_mask"], ctx,
            components,
        )
        total = total + token_weight * terms["token_relation"] + sample_weight * terms["sample_relation"]
        return total, {**metrics, **terms}

    extra = {"output_hidden_states": True}
    return Method(
        name="relation_kd", loss=loss, init_params=init_params,
        student_call={**response.student_call, **extra}, teacher_call={**response.teacher_call, **extra},
    )
