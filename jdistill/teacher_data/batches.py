"""Tokenized prompts grouped into fixed-size batches of one prompt bucket each."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from jdistill.data.prompts import Prompt
from jdistill.data.records import SkipReport
from jdistill.sampling.buckets import bucket_length, fill_batch, left_pad


@dataclasses.dataclass(frozen=True)
class TokenizedPrompt:
    prompt: Prompt
    ids: list[int]


@dataclasses.dataclass(frozen=True)
class PromptBatch:
    """``B`` left-padded prompts of one bucket; rows past ``len(items)`` are filler.

    Attributes:
        items: the real prompts (at most ``B``).
        ids_BxT: int32 ids, ``T`` the bucket length.
        mask_BxT: bool, True on real prompt tokens.
    """

    items: list[TokenizedPrompt]
    ids_BxT: np.ndarray
    mask_BxT: np.ndarray

    @property
    def prompt_tokens(self) -> int:
        return int(sum(len(item.ids) for item in self.items))


def tokenize_prompts(
    prompts: Sequence[Prompt], tokenizer, *, max_prompt_len: int, skips: SkipReport
) -> list[TokenizedPrompt]:
    """Token ids of each prompt; too long or empty prompts are counted in ``skips``."""
    out = []
    for prompt in prompts:
        ids = list(tokenizer(prompt.text, add_special_tokens=not prompt.rendered)["input_ids"])
        if not ids:
            skips.add("prompt tokenizes to nothing", prompt.id)
        elif len(ids) > max_prompt_len:
            skips.add(f"prompt longer than data.max_prompt_len={max_prompt_len}", prompt.id)
        else:
            out.append(TokenizedPrompt(prompt, ids))
    return out


def plan_batches(
    items: Sequence[TokenizedPrompt],
    *,
    batch_size: int,
    buckets: Sequence[int] | str,
    pad_id: int,
) -> list[PromptBatch]:
    """Batches of ``batch_size`` rows, each from one length bucket (shortest first).

    Within a bucket prompts keep their input order; a bucket's last batch is
    filled up with copies of its first row, so every batch of a bucket has
    the same shape (one compiled program per bucket).
    """
    by_bucket: dict[int, list[TokenizedPrompt]] = {}
    for item in items:
        by_bucket.setdefault(bucket_length(len(item.ids), buckets), []).append(item)
    batches = []
    for width in sorted(by_bucket):
        group = by_bucket[width]
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            ids, mask = left_pad([item.ids for item in chunk], width, pad_id)
            ids, mask = fill_batch(ids, mask, batch_size)
            batches.append(PromptBatch(chunk, ids, mask))
    return batches
