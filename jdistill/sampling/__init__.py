"""The sampler: jitted prefill + ``while_loop`` decoding for jdistill models.

Public API:

* :func:`generate`: greedy / temperature / top-k / top-p / min-p sampling of
  a batch of (left-padded) prompts, with per-row EOS, returning a
  :class:`GenerationOutput` (tokens, mask, lengths, log-probs);
* the filters (:mod:`jdistill.sampling.filters`) as pure functions of
  ``[B, V]`` logits;
* prompt bucketing and padding helpers (:mod:`jdistill.sampling.buckets`).

See ``docs/sampling.md``.
"""

from jdistill.sampling.buckets import bucket_length, fill_batch, left_pad, pow2_bucket, repad_left
from jdistill.sampling.filters import (
    FilterFlags,
    filter_logits,
    min_p_filter,
    top_k_filter,
    top_p_filter,
)
from jdistill.sampling.generation import generate, resolve_eos_ids
from jdistill.sampling.output import GenerationOutput

__all__ = [
    "FilterFlags",
    "GenerationOutput",
    "bucket_length",
    "fill_batch",
    "filter_logits",
    "generate",
    "left_pad",
    "min_p_filter",
    "pow2_bucket",
    "repad_left",
    "resolve_eos_ids",
    "top_k_filter",
    "top_p_filter",
]
