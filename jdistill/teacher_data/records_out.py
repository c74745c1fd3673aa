"""Output records: one JSON object per answered prompt."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jdistill.teacher_data.batches import TokenizedPrompt


def response_record(
    item: TokenizedPrompt,
    tokens_N: np.ndarray,
    mask_N: np.ndarray,
    eos_ids: Sequence[int],
    tokenizer,
    topk_ids_NxK: np.ndarray | None = None,
    topk_logprobs_NxK: np.ndarray | None = None,
) -> dict:
    """The record of one generated row.

    ``{"id", "prompt", "response", "stop"}`` for text prompts;
    ``{"id", "messages", "response", "stop"}`` for chats (the conversation
    with the new assistant turn appended). ``stop`` is ``"eos"`` or
    ``"length"``. The response text excludes the EOS token. With top-k
    log-probs, ``response_ids`` (the generated ids, the EOS included) and
    ``teacher_topk = {"ids": [[...]], "logprobs": [[...]]}``, one row per
    response id.
    """
    length = int(mask_N.sum())
    ids = [int(t) for t in tokens_N[:length]]
    ended = bool(ids) and ids[-1] in set(eos_ids)
    text_ids = ids[:-1] if ended else ids
    response = tokenizer.decode(text_ids, skip_special_tokens=True)
    record = {"id": item.prompt.id}
    if isinstance(item.prompt.prompt, list):
        record["messages"] = item.prompt.prompt + [{"role": "assistant", "content": response}]
    else:
        record["prompt"] = item.prompt.prompt
    record["response"] = response
    record["stop"] = "eos" if ended else "length"
    if topk_ids_NxK is not None:
        record["response_ids"] = ids
        record["teacher_topk"] = {
            "ids": topk_ids_NxK[:length].astype(int).tolist(),
            "logprobs": np.round(topk_logprobs_NxK[:length].astype(float), 5).tolist(),
        }
    return record
