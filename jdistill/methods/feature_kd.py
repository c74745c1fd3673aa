r"""Feature-based KD: match hidden states (and optionally attention) of mapped layers.

FitNets (Romero et al., 2015) style: for each mapped pair of hidden states
``(s, t)`` (:mod:`jdistill.methods.layer_map`; ``method.layer_map``), the
student's state is carried into the teacher's width by a learned linear
projector ``P_{s,t}: d_s → d_t`` (with bias; a method parameter trained at
``optimizer.method_learning_rate``) and compared with the frozen teacher's
state by a feature distance ``d`` (``method.feature_distance``: 'mse' or 'cosine'):

.. math:: L_{feat} = \frac{1}{|pairs|} \sum_{(s,t)} \frac{1}{N} \sum_{b,i} M_{bi}\, d\big(P_{s,t}(h^s_{b,i}),\ h^t_{b,i}\big)

Attention transfer (MiniLM-style; ``method.attention_weight > 0``): for the
blocks behind the mapped states, the KL from the teacher's to the student's
attention distribution of every response query, heads averaged or mapped
(``method.attention_heads``; :func:`jdistill.losses.attention_transfer`):

.. math:: L_{att} = \frac{1}{|pairs|} \sum_{(s,t)} \frac{1}{N} \sum_{b,i} M_{bi}\, \mathrm{KL}(a^t_{b,i} \| a^s_{b,i})

Combined with the response-based term of :mod:`jdistill.methods.kd`:

.. math:: L = (1 - kd\_rate)\,CE + kd\_rate\,D(p \| q) + feature\_weight\,L_{feat} + attention\_weight\,L_{att}

``N`` is the global response-token count; the teacher is frozen (stop-gradient),
the projectors and the student learn. Same tokenizer for both models.
"""

from __future__ import annotations

import jax
import ml_collections

from jdistill import losses
from jdistill.methods import kd
from jdistill.methods.base import Method
from jdistill.methods.layer_map import attention_pairs, layer_pairs
from jdistill.methods.projectors import apply_linear, init_linear


def feature_term(projectors, pairs, student_hidden_LxBxTxDs, teacher_hidden_LxBxTxDt, mask_BxT, normalizer, distance):
    """Mean over the layer pairs of the token-mean projected feature distance."""
    total = 0.0
    for projector, (s, t) in zip(projectors, pairs):
        projected_BxTxDt = apply_linear(projector, student_hidden_LxBxTxDs[s])
        teacher_BxTxDt = jax.lax.stop_gradient(teacher_hidden_LxBxTxDt[t])
        total = total + losses.token_mean(distance(projected_BxTxDt, teacher_BxTxDt), mask_BxT, normalizer=normalizer)
    return total / len(pairs)


def attention_term(blocks, student_probs_LxBxHxTxS, teacher_probs_LxBxHxTxS, mask_BxT, normalizer, heads):
    """Mean over the block pairs of the token-mean attention KL."""
    total = 0.0
    for s, t in blocks:
        per_query_BxT = losses.attention_transfer(
            student_probs_LxBxHxTxS[s], jax.lax.stop_gradient(teacher_probs_LxBxHxTxS[t]), heads=heads
        )
        total = total + losses.token_mean(per_query_BxT, mask_BxT, normalizer=normalizer)
    return total / len(blocks)


def make(config: ml_collections.ConfigDict) -> Method:
    response = kd.make(config)
    distance = losses.get_feature_distance(config.feature_distance)
    feature_weight = float(config.feature_weight)
    attention_weight = float(config.attention_weight)
    heads = config.attention_heads
    if heads not in ("mean", "mapped"):
        raise ValueError(f"method.attention_heads must be 'mean' or 'mapped', got {heads!r}.")
    if feature_weight < 0 or attention_weight < 0:
        raise ValueError("method.feature_weight and method.attention_weight must be >= 0.")
    with_attention = attention_weight > 0

    def pairs_of(student_config, teacher_config):
        pairs = layer_pairs(config.layer_map, student_config.num_layers, teacher_config.num_layers)
        if with_attention and not attention_pairs(pairs):
            raise ValueError(
                f"method.layer_map {config.layer_map!r} maps no block outputs (only embeddings), so attention "
                "transfer has no layer to use; map layers >= 1 or set method.attention_weight=0."
            )
        return pairs

    def init_params(key, student, teacher):
        pairs = pairs_of(student.config, teacher.config)
        keys = jax.random.split(key, len(pairs))
        d_s, d_t = student.config.hidden_size, teacher.config.hidden_size
        return {"projectors": [init_linear(k, d_s, d_t) for k in keys]}

    def loss(method_params, batch, student, teacher, ctx):
        total, metrics = response.loss(None, batch, student, teacher, ctx)
        pairs = pairs_of(student.model.config, teacher.model.config)
        feat = feature_term(
            method_params["projectors"], pairs, student.output.all_hidden_states, teacher.output.all_hidden_states,
            batch["loss_mask"], ctx.num_tokens, distance,
        )
        total = total + feature_weight * feat
        metrics = {**metrics, "feature": feat}
        if with_attention:
            att = attention_term(
                attention_pairs(pairs), student.output.attention_probs, teacher.output.attention_probs,
                batch["loss_mask"], ctx.num_tokens, heads,
            )
            total = total + attention_weight * att
            metrics["attention"] = att
        return total, metrics

    extra = {"output_hidden_states": True, **({"output_attentions": True} if with_attention else {})}
    return Method(
        name="feature_kd", loss=loss, init_params=init_params,
        student_call={**response.student_call, **extra}, teacher_call={**response.teacher_call, **extra},
    )
