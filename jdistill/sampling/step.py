"""One sampling step: next-token logits in, chosen tokens and their log-probs out."""

import dataclasses

import jax
import jax.numpy as jnp

from jdistill.sampling.filters import FilterFlags, filter_logits


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """Traced numeric sampling settings (changing them never recompiles).

    Attributes:
        temperature, top_p, min_p: float32 scalars.
        eos_ids_E: ``[E]`` int32 end-of-sequence ids (``E`` may be 0).
        pad_id: int32 scalar written after a row has ended.
    """

    temperature: jnp.ndarray
    top_p: jnp.ndarray
    min_p: jnp.ndarray
    eos_ids_E: jnp.ndarray
    pad_id: jnp.ndarray


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StepChoice:
    """What one step chose for each row.

    Attributes:
        token_B: int32 chosen ids.
        logprob_B: float32 log-prob of the token under the unfiltered model.
        sampling_logprob_B: float32 log-prob under the sampling distribution
            (0 for greedy).
        topk_ids_BxK, topk_logprobs_BxK: the unfiltered model's top ``K``
            (``None`` when not asked).
    """

    token_B: jnp.ndarray
    logprob_B: jnp.ndarray
    sampling_logprob_B: jnp.ndarray
    topk_ids_BxK: jnp.ndarray | None
    topk_logprobs_BxK: jnp.ndarray | None


def _take_B(values_BxV: jnp.ndarray, index_B: jnp.ndarray) -> jnp.ndarray:
    return jnp.take_along_axis(values_BxV, index_B[:, None], axis=-1)[:, 0]


def choose_tokens(
    logits_BxV: jnp.ndarray,
    key,
    flags: FilterFlags,
    params: SamplingParams,
    num_topk: int,
) -> StepChoice:
    """Greedy or filtered sampling of one token per row.

    Args:
        logits_BxV: next-token logits (any float dtype; used in float32).
        key: PRNG key of this step (unused when greedy).
        flags: static filter flags.
        params: traced numeric settings.
        num_topk: static; also return the unfiltered top-``num_topk``.
    """
    logits_BxV = logits_BxV.astype(jnp.float32)
    logprobs_BxV = jax.nn.log_softmax(logits_BxV, axis=-1)
    if flags.greedy:
        token_B = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
        sampling_logprob_B = jnp.zeros(token_B.shape, jnp.float32)
    else:
        filtered_BxV = filter_logits(
            logits_BxV,
            flags,
            temperature=params.temperature,
            top_p=params.top_p,
            min_p=params.min_p,
        )
        token_B = jax.random.categorical(key, filtered_BxV, axis=-1).astype(jnp.int32)
        sampling_logprob_B = _take_B(jax.nn.log_softmax(filtered_BxV, axis=-1), token_B)
    topk_ids_BxK = topk_logprobs_BxK = None
    if num_topk:
        topk_logprobs_BxK, topk_ids_BxK = jax.lax.top_k(logprobs_BxV, num_topk)
        topk_ids_BxK = topk_ids_BxK.astype(jnp.int32)
    return StepChoice(
        token_B=token_B,
        logprob_B=_take_B(logprobs_BxV, token_B),
        sampling_logprob_B=sampling_logprob_B,
        topk_ids_BxK=topk_ids_BxK,
        topk_logprobs_BxK=topk_logprobs_BxK,
    )
