r"""Feature-based KD: match hidden states (and optionally attention) of mapped layers.

FitNets (Romero et al., ICLR 2015) style: for each mapped pair of hidden states
``(s, t)`` (:mod:`jdistill.methods.layer_map`; ``method.layer_map``), the
student's state is carried into the teacher's width by a learned linear
projector ``P_{s,t}: d_s → d_t`` (with bias; a method parameter trained at
``optimizer.method_learning_rate``; FitNets' regressor) and compared with the
frozen teacher's state by a feature distance ``d`` (``method.feature_distance``:
'cosine', 'mse', or 'fitnets' — the paper's hint loss ``½‖P(h^s) − h^t‖²``):

.. math:: L_{feat} = \frac{1}{|pairs|} \sum_{(s,t)} \frac{1}{N} \sum_{b,i} M_{bi}\, d\big(P_{s,t}(h^s_{b,i}),\ h^t_{b,i}\big)

Attention transfer (``method.attention_weight > 0``), the KL from the teacher's
to the student's attention distribution of every response query
(``method.attention_loss``):

* ``'kl'``: for the blocks behind the mapped states, heads averaged or mapped in
  groups (``method.attention_heads``; :func:`jdistill.losses.attention_transfer`);
* ``'minilm'``: MiniLM (Wang et al., NeurIPS 2020) — the last block of both
  models only, head by head with equal head counts
  (:func:`jdistill.losses.minilm_attention_loss`):

.. math:: L_{att} = \frac{1}{|blocks|} \sum_{(s,t)} \frac{1}{N} \sum_{b,i} M_{bi}\, \ell_{att}(a^s_{b,i}, a^t_{b,i})

with :math:`\ell_{att} = \mathrm{KL}(\bar a^t \| \bar a^s)` of the head averages
(``'kl'``, ``'mean'``) or :math:`\frac{1}{H}\sum_h \mathrm{KL}(a^{t,h} \| a^{s,h})`
(``'minilm'``; ``'kl'``, ``'mapped'`` after grouping heads).

Combined with the response-based term of :mod:`jdistill.methods.kd`:

.. math:: L = (1 - kd\_rate)\,CE + kd\_rate\,D(p \| q) + feature\_weight\,L_{feat} + attention\_weight\,L_{att}

``N`` is the global response-token count; the teacher is frozen (stop-gradient),
the projectors and the student learn. Same tokenizer for both models.
"""

from __future__ import annotations

import dataclasses

import jax

from jdistill import losses
from jdistill.methods import kd
from jdistill.methods.base import Method, ModelFacts
from jdistill.methods.settings import KDSettings, setting
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


ATTENTION_LOSSES = ("kl", "minilm")
ATTENTION_HEADS = ("mean", "mapped")


def attention_blocks(attention_loss, pairs, student_layers, teacher_layers):
    """The ``(student block, teacher block)`` pairs of attention transfer.

    ``'kl'``: the blocks behind the mapped hidden states; ``'minilm'``: the last block of each model.
    """
    if attention_loss == "minilm":
        return ((student_layers - 1, teacher_layers - 1),)
    return attention_pairs(pairs)


def attention_term(blocks, student_probs_LxBxHxTxS, teacher_probs_LxBxHxTxS, mask_BxT, normalizer, per_query):
    """Mean over the block pairs of the token-mean per-query attention loss ``per_query(student, teacher)``."""
    total = 0.0
    for s, t in blocks:
        per_query_BxT = per_query(student_probs_LxBxHxTxS[s], jax.lax.stop_gradient(teacher_probs_LxBxHxTxS[t]))
        total = total + losses.token_mean(per_query_BxT, mask_BxT, normalizer=normalizer)
    return total / len(blocks)


@dataclasses.dataclass(frozen=True)
class Settings(KDSettings):
    """Hidden-state (and attention) transfer on top of vanilla KD."""

    layer_map: str = setting("uniform", "Layer pairs: 'uniform' | 'last' | 'S:T,...' (0 = embeddings).")
    feature_distance: str = setting("cosine", "'cosine' | 'mse' | 'fitnets' between projected student and teacher states.")
    feature_weight: float = setting(1.0, "Weight of the hidden-state term (added to the CE/KD mix).")
    attention_weight: float = setting(0.0, "Weight of attention transfer (KL of mapped layers); 0 = off.")
    attention_loss: str = setting("kl", "'kl' (mapped layers, heads per attention_heads) | 'minilm' (last blocks, per head).")
    attention_heads: str = setting("mean", "With attention_loss='kl': 'mean' (heads averaged) | 'mapped' (head groups).")

    def __post_init__(self):
        super().__post_init__()
        distances = sorted(losses.FEATURE_DISTANCES)
        if self.feature_distance not in distances:
            raise ValueError(f"method.feature_distance must be one of {distances}, got {self.feature_distance!r}.")
        if self.attention_loss not in ATTENTION_LOSSES:
            raise ValueError(f"method.attention_loss must be one of {ATTENTION_LOSSES}, got {self.attention_loss!r}.")
        if self.attention_heads not in ATTENTION_HEADS:
            raise ValueError(f"method.attention_heads must be one of {ATTENTION_HEADS}, got {self.attention_heads!r}.")
        if self.feature_weight < 0 or self.attention_weight < 0:
            raise ValueError("method.feature_weight and method.attention_weight must be >= 0.")


def make(settings: Settings, facts: ModelFacts = ModelFacts()) -> Method:
    response = kd.make(settings, facts)
    distance = losses.get_feature_distance(settings.feature_distance)
    feature_weight = float(settings.feature_weight)
    attention_weight = float(settings.attention_weight)
    attention_loss, heads = settings.attention_loss, settings.attention_heads
    with_attention = attention_weight > 0

    def per_query(student_probs_BxHsxTxS, teacher_probs_BxHtxTxS):
        if attention_loss == "kl":
            return losses.attention_transfer(student_probs_BxHsxTxS, teacher_probs_BxHtxTxS, heads=heads)
        h_s, h_t = student_probs_BxHsxTxS.shape[1], teacher_probs_BxHtxTxS.shape[1]
        if h_s != h_t:
            raise ValueError(
                f"method.attention_loss='minilm' compares heads one to one and needs equal head counts, got "
                f"student {h_s} and teacher {h_t}; use method.attention_loss='kl' with "
                "method.attention_heads='mapped' (head groups) or 'mean'."
            )
        return losses.minilm_attention_loss(student_probs_BxHsxTxS, teacher_probs_BxHtxTxS)

    def pairs_of(student_config, teacher_config):
        pairs = layer_pairs(settings.layer_map, student_config.num_layers, teacher_config.num_layers)
        if with_attention and attention_loss == "kl" and not attention_pairs(pairs):
            raise ValueError(
                f"method.layer_map {settings.layer_map!r} maps no block outputs (only embeddings), so attention "
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
            blocks = attention_blocks(
                attention_loss, pairs, student.model.config.num_layers, teacher.model.config.num_layers
            )
            att = attention_term(
                blocks, student.output.attention_probs, teacher.output.attention_probs, batch["loss_mask"],
                ctx.num_tokens, per_query,
            )
            total = total + attention_weight * att
            metrics["attention"] = att
        return total, metrics

    extra = {"output_hidden_states": True, **({"output_attentions": True} if with_attention else {})}
    return Method(
        name="feature_kd", loss=loss, init_params=init_params,
        student_call={**response.student_call, **extra}, teacher_call={**response.teacher_call, **extra},
    )
