"""Pure functional distillation losses for JAX.

Everything here is a pure function of arrays, needs only ``jax``, and works
under ``jax.jit``, ``jax.grad`` and sharded inputs. Divergences return
per-token values (no reduction); reduce them with :func:`token_mean` or
:func:`sequence_mean`. See ``docs/losses.md`` for every formula and its paper.
"""

from jdistill.losses.cald import cald, curriculum_alpha, mean_token_probability, probability_gap
from jdistill.losses.cross_model_attention import (
    CrossModelAttentionOutput,
    cross_model_attention,
    init_cross_model_attention_params,
)
from jdistill.losses.cross_entropy import token_cross_entropy
from jdistill.losses.distributions import log_probs
from jdistill.losses.divergences import (
    DIVERGENCES,
    adaptive_kl,
    forward_kl,
    generalized_jsd,
    get_divergence,
    js_divergence,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    total_variation,
)
from jdistill.losses.fused import fused_cald, fused_chunk_size, fused_cross_entropy, fused_kd_loss
from jdistill.losses.reductions import REDUCTIONS, get_reduction, sequence_mean, token_mean

__all__ = [
    "DIVERGENCES",
    "REDUCTIONS",
    "CrossModelAttentionOutput",
    "adaptive_kl",
    "cald",
    "cross_model_attention",
    "curriculum_alpha",
    "forward_kl",
    "fused_cald",
    "fused_chunk_size",
    "fused_cross_entropy",
    "fused_kd_loss",
    "generalized_jsd",
    "get_divergence",
    "get_reduction",
    "init_cross_model_attention_params",
    "js_divergence",
    "log_probs",
    "mean_token_probability",
    "probability_gap",
    "reverse_kl",
    "sequence_mean",
    "skew_forward_kl",
    "skew_reverse_kl",
    "token_cross_entropy",
    "token_mean",
    "total_variation",
]
