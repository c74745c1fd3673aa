"""Pure functional distillation losses for JAX.

Everything here is a pure function of arrays, needs only ``jax``, and works
under ``jax.jit``, ``jax.grad`` and sharded inputs. Divergences return
per-token values (no reduction); reduce them with :func:`token_mean` or
:func:`sequence_mean`. The cross-vocabulary kernels (ULD, MinED's vocabulary
projection, exact token alignment's span merges and distances) compare a student
and a teacher whose vocabularies differ. See ``docs/losses.md`` for every formula
and its paper.
"""

from jdistill.losses.attention_transfer import (
    attention_kl,
    attention_transfer,
    average_head_groups,
    minilm_attention_loss,
)
from jdistill.losses.cald import (
    cald,
    cald_token_divergence,
    curriculum_alpha,
    mean_token_probability,
    probability_gap,
)
from jdistill.losses.cross_model_attention import (
    STD_OVER as CMA_STD_OVER,
    CrossModelAttentionOutput,
    cross_model_attention,
    cma_param_shapes,
)
from jdistill.losses.cross_entropy import token_cross_entropy
from jdistill.losses.distributions import log_probs
from jdistill.losses.divergences import (
    DIVERGENCES,
    adaptive_kl,
    forward_kl,
    generalized_jsd,
    generalized_jsd_of_log_probs,
    get_divergence,
    js_divergence,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    total_variation,
)
from jdistill.losses.features import (
    FEATURE_DISTANCES,
    feature_cosine_distance,
    feature_mse,
    fitnets_hint_loss,
    get_feature_distance,
)
from jdistill.losses.fused import fused_cald, fused_chunk_size, fused_cross_entropy, fused_kd_loss
from jdistill.losses.reductions import REDUCTIONS, get_reduction, sequence_mean, token_mean
from jdistill.losses.relations import (
    cosine_similarity_matrix,
    masked_mean_pool,
    rkd_angle_loss,
    rkd_distance_loss,
    sample_relation_distance,
    similarity_preserving_loss,
    token_relation_distance,
)
from jdistill.losses.span_alignment import (
    SPAN_MERGES,
    bucket_distance,
    gold_distance,
    merge_spans,
    segment_chain_rule,
    segment_log_mean_exp,
    teacher_segments,
    unmatched_ids,
)
from jdistill.losses.sparse_targets import sparse_forward_kl
from jdistill.losses.teacher_mixture import mixture_log_probs
from jdistill.losses.token_logprobs import fused_token_logprobs, token_logprobs
from jdistill.losses.uld import (
    gather_positions,
    pad_vocabulary,
    sorted_l1_distance,
    sorted_probs_desc,
    uld_distance,
)
from jdistill.losses.vocab_projection import mined_kd, project_teacher_logits

__all__ = [
    "CMA_STD_OVER",
    "CrossModelAttentionOutput",
    "DIVERGENCES",
    "FEATURE_DISTANCES",
    "REDUCTIONS",
    "SPAN_MERGES",
    "adaptive_kl",
    "attention_kl",
    "attention_transfer",
    "average_head_groups",
    "bucket_distance",
    "cald",
    "cald_token_divergence",
    "cma_param_shapes",
    "cosine_similarity_matrix",
    "cross_model_attention",
    "curriculum_alpha",
    "feature_cosine_distance",
    "feature_mse",
    "fitnets_hint_loss",
    "forward_kl",
    "fused_cald",
    "fused_chunk_size",
    "fused_cross_entropy",
    "fused_kd_loss",
    "fused_token_logprobs",
    "gather_positions",
    "generalized_jsd",
    "generalized_jsd_of_log_probs",
    "get_divergence",
    "get_feature_distance",
    "get_reduction",
    "gold_distance",
    "js_divergence",
    "log_probs",
    "masked_mean_pool",
    "mean_token_probability",
    "merge_spans",
    "mined_kd",
    "minilm_attention_loss",
    "mixture_log_probs",
    "pad_vocabulary",
    "probability_gap",
    "project_teacher_logits",
    "reverse_kl",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "sample_relation_distance",
    "segment_chain_rule",
    "segment_log_mean_exp",
    "sequence_mean",
    "similarity_preserving_loss",
    "skew_forward_kl",
    "skew_reverse_kl",
    "sorted_l1_distance",
    "sorted_probs_desc",
    "sparse_forward_kl",
    "teacher_segments",
    "token_cross_entropy",
    "token_logprobs",
    "token_mean",
    "token_relation_distance",
    "total_variation",
    "uld_distance",
    "unmatched_ids",
]
