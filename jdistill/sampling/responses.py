"""Responses to many prompts: the generation service of evaluation, on-policy training and teacher data.

Every caller that answers a list of prompts goes through :func:`stream_responses`
(or :func:`generate_responses`, which collects it), so all of them share

* one stop policy: a :class:`~jdistill.sampling.stop_policy.StopTokens` from
  :func:`~jdistill.sampling.stop_policy.stop_tokens` (tokenizer EOS plus the
  checkpoint's ``generation_config.json`` end-of-turn ids plus the model
  config's);
* one bucketing rule (:func:`prompt_batches`): prompts sorted by length
  (stable) into batches of ``batch_size`` rows, the last batch filled with
  copies of its first row; each batch left-padded to the caller's fixed
  ``width`` (one compiled program per model for a whole run), else to the
  bucket of the batch's longest prompt (powers of two >= 16 by default);
* one host transfer per batch (:func:`host_arrays`): tokens, lengths and, when
  asked, the top-k ids and log-probs come back together.

Each prompt gets a :class:`Response`: its generated ids (the stop token
included when the row ended), whether it ended, and its top-k arrays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

import jax
import numpy as np

from jdistill.padding import bucket_length, fill_batch, left_pad
from jdistill.sampling.generation import generate
from jdistill.sampling.stop_policy import StopTokens


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplingSettings:
    """How tokens are drawn (see :func:`jdistill.sampling.generate`).

    Attributes:
        max_new_tokens: ``N``, the response length limit (>= 1).
        temperature: 0 = greedy.
        top_p: nucleus threshold; 1 = off.
        top_k: keep the ``top_k`` most likely tokens; 0 = off.
        min_p: drop tokens below ``min_p`` times the top probability; 0 = off.
    """

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0

    def __post_init__(self):
        if int(self.max_new_tokens) < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclasses.dataclass(frozen=True)
class Response:
    """One prompt's generated tokens.

    Attributes:
        ids: ``[n]`` int32 generated ids, ``1 <= n <= max_new_tokens``; the
            stop token is the last one when the row ended.
        ended: the row emitted a stop token (else it hit ``max_new_tokens``).
        topk_ids: ``[n, K]`` int32, the unfiltered model's ``K`` most likely
            ids at each generated position (most likely first), or ``None``.
        topk_logprobs: ``[n, K]`` float32 log-probabilities of ``topk_ids``,
            or ``None``.
    """

    ids: np.ndarray
    ended: bool
    topk_ids: np.ndarray | None = None
    topk_logprobs: np.ndarray | None = None

    @property
    def text_ids(self) -> np.ndarray:
        """``ids`` without the stop token: what a response's text is decoded from."""
        return self.ids[:-1] if self.ended else self.ids


@dataclasses.dataclass(frozen=True)
class PromptBatch:
    """``B`` left-padded prompts; the rows past ``len(rows)`` are filler copies.

    Attributes:
        rows: indices (into the caller's prompt list) of the real rows, in
            batch order.
        ids_BxT: int32 ids, ``T`` the batch's width.
        mask_BxT: bool, True on real prompt tokens.
    """

    rows: tuple[int, ...]
    ids_BxT: np.ndarray
    mask_BxT: np.ndarray


@dataclasses.dataclass(frozen=True)
class ResponseBatch:
    """The responses of one :class:`PromptBatch`: ``responses[i]`` answers prompt ``rows[i]``."""

    rows: tuple[int, ...]
    responses: tuple[Response, ...]

    @property
    def new_tokens(self) -> int:
        """Generated tokens of the real rows (stop tokens included)."""
        return sum(len(r.ids) for r in self.responses)


def prompt_batches(
    prompts: Sequence[Sequence[int]],
    *,
    batch_size: int,
    pad_id: int,
    width: int | None = None,
    buckets: Sequence[int] | str = "pow2",
) -> Iterator[PromptBatch]:
    """The bucketing rule: length-sorted, fixed-size, left-padded batches (built lazily).

    Args:
        prompts: ``P`` non-empty token-id sequences.
        batch_size: ``B``, rows of every batch; the last batch is filled with
            copies of its first row.
        pad_id: id of the padding slots.
        width: pad every batch to this width (every prompt must fit);
            ``None`` pads each batch to ``bucket_length(longest prompt,
            buckets)``.
        buckets: the bucket scheme when ``width`` is ``None`` (see
            :func:`jdistill.padding.bucket_length`).

    Yields:
        ``ceil(P / B)`` :class:`PromptBatch` es, shortest prompts first;
        prompts of equal length keep their order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for index, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"prompt {index} is empty; every prompt needs at least one token")
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for start in range(0, len(order), batch_size):
        rows = tuple(order[start : start + batch_size])
        chunk = [prompts[i] for i in rows]
        batch_width = width if width is not None else bucket_length(max(len(p) for p in chunk), buckets)
        ids_BxT, mask_BxT = left_pad(chunk, batch_width, pad_id)
        ids_BxT, mask_BxT = fill_batch(ids_BxT, mask_BxT, batch_size)
        yield PromptBatch(rows, ids_BxT, mask_BxT)


def host_arrays(tree):
    """``tree``'s arrays as numpy arrays, in one transfer.

    Arrays sharded over several processes are gathered, so every process gets
    the full (global) values.
    """
    leaves = jax.tree.leaves(tree)
    if all(getattr(leaf, "is_fully_addressable", True) for leaf in leaves):
        return jax.tree.map(np.asarray, jax.device_get(tree))
    from jax.experimental import multihost_utils

    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def _responses(host, num_rows: int, stop: StopTokens) -> tuple[Response, ...]:
    tokens_BxN, lengths_B, topk_ids_BxNxK, topk_logprobs_BxNxK = host
    out = []
    for row in range(num_rows):
        n = int(lengths_B[row])
        ids = tokens_BxN[row, :n].astype(np.int32)
        topk_ids = topk_logprobs = None
        if topk_ids_BxNxK is not None:
            topk_ids = topk_ids_BxNxK[row, :n].astype(np.int32)
            topk_logprobs = topk_logprobs_BxNxK[row, :n].astype(np.float32)
        out.append(Response(ids, stop.ended(ids), topk_ids, topk_logprobs))
    return tuple(out)


def stream_responses(
    model,
    prompts: Sequence[Sequence[int]],
    settings: SamplingSettings,
    stop: StopTokens,
    *,
    batch_size: int,
    key=None,
    batch_key: Callable[[tuple[int, ...]], jax.Array] | None = None,
    mesh=None,
    width: int | None = None,
    buckets: Sequence[int] | str = "pow2",
    num_topk_logprobs: int = 0,
) -> Iterator[ResponseBatch]:
    """Answers ``prompts`` batch by batch (see the module doc for the rule).

    Lazy: a batch is generated when the iterator reaches it, so a caller can
    write each batch before the next one runs, or stop early.

    Args:
        model: a ``jdistill.models.Decoder``.
        prompts: ``P`` non-empty token-id sequences.
        settings: the sampling settings.
        stop: stop ids and pad id (:func:`jdistill.sampling.stop_tokens`).
        batch_size: ``B`` rows per ``generate`` call (a multiple of the mesh's
            batch shards).
        key: PRNG key; the batch that starts at position ``s`` of the
            length-sorted order uses ``fold_in(key, s)``. Not needed for
            greedy decoding.
        batch_key: instead of ``key``: a function of a batch's ``rows`` (prompt
            indices) that returns its key (e.g. stable across restarts).
        mesh: shard each batch over the mesh (see ``generate``).
        width: fixed prompt width of every batch (``None``: per-batch bucket).
        buckets: the bucket scheme when ``width`` is ``None``.
        num_topk_logprobs: also return the top-``K`` ids and log-probs.

    Yields:
        One :class:`ResponseBatch` per batch, shortest prompts first.
    """
    if key is not None and batch_key is not None:
        raise ValueError("pass key or batch_key, not both")
    batches = prompt_batches(prompts, batch_size=batch_size, pad_id=stop.pad_id, width=width, buckets=buckets)
    start = 0
    for batch in batches:
        if batch_key is not None:
            this_key = batch_key(batch.rows)
        else:
            this_key = None if key is None else jax.random.fold_in(key, start)
        out = generate(
            model,
            batch.ids_BxT,
            batch.mask_BxT,
            key=this_key,
            max_new_tokens=int(settings.max_new_tokens),
            temperature=float(settings.temperature),
            top_k=int(settings.top_k),
            top_p=float(settings.top_p),
            min_p=float(settings.min_p),
            eos_ids=stop.eos_ids,
            pad_id=stop.pad_id,
            num_topk_logprobs=int(num_topk_logprobs),
            prompt_buckets=None,
            mesh=mesh,
        )
        host = host_arrays((out.tokens, out.lengths, out.topk_ids, out.topk_logprobs))
        yield ResponseBatch(batch.rows, _responses(host, len(batch.rows), stop))
        start += len(batch.rows)


def generate_responses(
    model,
    prompts: Sequence[Sequence[int]],
    settings: SamplingSettings,
    stop: StopTokens,
    *,
    batch_size: int,
    key=None,
    batch_key: Callable[[tuple[int, ...]], jax.Array] | None = None,
    mesh=None,
    width: int | None = None,
    buckets: Sequence[int] | str = "pow2",
    num_topk_logprobs: int = 0,
    progress=None,
) -> list[Response]:
    """One :class:`Response` per prompt, in prompt order.

    The arguments are :func:`stream_responses`'s, plus ``progress``: anything
    with ``update(n)`` (a tqdm bar), told the number of prompts each batch
    answered.
    """
    responses: list[Response | None] = [None] * len(prompts)
    stream = stream_responses(
        model, prompts, settings, stop, batch_size=batch_size, key=key, batch_key=batch_key, mesh=mesh,
        width=width, buckets=buckets, num_topk_logprobs=num_topk_logprobs,
    )
    for batch in stream:
        for index, response in zip(batch.rows, batch.responses):
            responses[index] = response
        if progress is not None:
            progress.update(len(batch.rows))
    return responses
