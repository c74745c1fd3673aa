"""The sampler: jitted prefill + ``while_loop`` decoding for jdistill models.

Public API:

* :func:`generate`: greedy / temperature / top-k / top-p / min-p sampling of
  a batch of (left-padded) prompts, with per-row EOS, returning a
  :class:`GenerationOutput` (tokens, mask, lengths, log-probs);
* the generation service (:mod:`jdistill.sampling.responses`) that evaluation,
  on-policy training and teacher-data generation share:
  :func:`generate_responses` / :func:`stream_responses` answer a list of
  prompts with :class:`SamplingSettings`, stopping at the
  :class:`StopTokens` of :func:`stop_tokens` (tokenizer EOS plus the
  checkpoint's ``generation_config.json`` end-of-turn ids plus the model
  config's);
* two-model decoding (:mod:`jdistill.sampling.paired`): student and teacher
  step together (Speculative KD's top-k verification, MiniLLM's teacher-mixed
  sampling);
* the filters (:mod:`jdistill.sampling.filters`) as pure functions of
  ``[B, V]`` logits;
* prompt bucketing and padding helpers, re-exported from :mod:`jdistill.padding`.

See ``docs/sampling.md``.
"""

from jdistill.padding import bucket_length, fill_batch, left_pad, pow2_bucket, repad_left
from jdistill.sampling.filters import (
    FilterFlags,
    filter_logits,
    min_p_filter,
    top_k_filter,
    top_p_filter,
)
from jdistill.sampling.generation import generate
from jdistill.sampling.output import GenerationOutput
from jdistill.sampling.paired import PAIRED_RULES, PairedResponse, decode_paired, generate_paired
from jdistill.sampling.responses import (
    PromptBatch,
    Response,
    ResponseBatch,
    SamplingSettings,
    generate_responses,
    prompt_batches,
    stream_responses,
)
from jdistill.sampling.stop_policy import StopTokens, StopTokensError, stop_tokens

__all__ = [
    "FilterFlags",
    "GenerationOutput",
    "PAIRED_RULES",
    "PairedResponse",
    "PromptBatch",
    "Response",
    "ResponseBatch",
    "SamplingSettings",
    "StopTokens",
    "StopTokensError",
    "bucket_length",
    "decode_paired",
    "fill_batch",
    "filter_logits",
    "generate",
    "generate_paired",
    "generate_responses",
    "left_pad",
    "min_p_filter",
    "pow2_bucket",
    "prompt_batches",
    "repad_left",
    "stop_tokens",
    "stream_responses",
    "top_k_filter",
    "top_p_filter",
]
