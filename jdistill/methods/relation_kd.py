r"""Relation-based KD: match the similarity structure of the two models' representations.

For each mapped pair of hidden states ``(s, t)`` (:mod:`jdistill.methods.layer_map`;
``method.layer_map``, by default only the last hidden states), cosine-similarity
matrices are built *within* each model and compared (:mod:`jdistill.losses.relations`),
so the hidden sizes may differ and no projector is needed:

* token relations — within each sequence, the similarities between its response
  tokens: ``L_tok = (1/|pairs|) Σ_pairs (1/N) Σ_{b,i} M_bi · (1/n_b) Σ_j M_bj (S^s_bij − S^t_bij)²``;
* sample relations — between the sequences of the micro-batch, the similarities of
  their mean-pooled response representations:
  ``L_smp = (1/|pairs|) Σ_pairs (1/B_glob) Σ_b v_b · (1/n) Σ_c v_c (G^s_bc − G^t_bc)²``.

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

import jax
import jax.numpy as jnp
import ml_collections

from jdistill import losses
from jdistill.methods import kd
from jdistill.methods.base import Method
from jdistill.methods.layer_map import layer_pairs


def relation_terms(pairs, student_hidden_LxBxTxDs, teacher_hidden_LxBxTxDt, mask_BxT, ctx):
    """``{'token_relation', 'sample_relation'}``, each averaged over the layer pairs."""
    valid_B = jnp.any(mask_BxT > 0, axis=-1)
    token_total = sample_total = 0.0
    for s, t in pairs:
        h_s_BxTxDs = student_hidden_LxBxTxDs[s]
        h_t_BxTxDt = jax.lax.stop_gradient(teacher_hidden_LxBxTxDt[t])
        token_BxT = losses.token_relation_distance(h_s_BxTxDs, h_t_BxTxDt, mask_BxT)
        token_total = token_total + losses.token_mean(token_BxT, mask_BxT, normalizer=ctx.num_tokens)
        sample_B = losses.sample_relation_distance(
            losses.masked_mean_pool(h_s_BxTxDs, mask_BxT), losses.masked_mean_pool(h_t_BxTxDt, mask_BxT), valid_B
        )
        sample_total = sample_total + jnp.sum(jnp.where(valid_B, sample_B, 0.0)) / ctx.num_sequences
    return {"token_relation": token_total / len(pairs), "sample_relation": sample_total / len(pairs)}


def make(config: ml_collections.ConfigDict) -> Method:
    response = kd.make(config)
    token_weight = float(config.token_relation_weight)
    sample_weight = float(config.sample_relation_weight)
    if token_weight < 0 or sample_weight < 0:
        raise ValueError("method.token_relation_weight and method.sample_relation_weight must be >= 0.")

    def init_params(key, student, teacher):
        del key
        layer_pairs(config.layer_map, student.config.num_layers, teacher.config.num_layers)  # fails early if bad
        return {}

    def loss(method_params, batch, student, teacher, ctx):
        del method_params
        total, metrics = response.loss(None, batch, student, teacher, ctx)
        pairs = layer_pairs(config.layer_map, student.model.config.num_layers, teacher.model.config.num_layers)
        terms = relation_terms(
            pairs, student.output.all_hidden_states, teacher.output.all_hidden_states, batch["loss_mask"], ctx
        )
        total = total + token_weight * terms["token_relation"] + sample_weight * terms["sample_relation"]
        return total, {**metrics, **terms}

    extra = {"output_hidden_states": True}
    return Method(
        name="relation_kd", loss=loss, init_params=init_params,
        student_call={**response.student_call, **extra}, teacher_call={**response.teacher_call, **extra},
    )
