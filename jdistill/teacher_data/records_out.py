"""Output records: one JSON object per answered prompt."""

from __future__ import annotations

import numpy as np

from jdistill.sampling import Response
from jdistill.teacher_data.batches import TokenizedPrompt


def response_record(item: TokenizedPrompt, response: Response, tokenizer) -> dict:
    """The record of one answered prompt.

    ``{"id", "prompt", "response", "stop"}`` for text prompts;
    ``{"id", "messages", "response", "stop"}`` for chats (the conversation
    with the new assistant turn appended). ``stop`` is ``"eos"`` (the response
    ended at a stop token) or ``"length"``. The response text excludes the
    stop token. With top-k log-probs, ``response_ids`` (the generated ids, the
    stop token included) and ``teacher_topk = {"ids": [[...]], "logprobs":
    [[...]]}``, one row per response id.
    """
    text = tokenizer.decode(response.text_ids.tolist(), skip_special_tokens=True)
    record = {"id": item.prompt.id}
    if isinstance(item.prompt.prompt, list):
        record["messages"] = item.prompt.prompt + [{"role": "assistant", "content": text}]
    else:
        record["prompt"] = item.prompt.prompt
    record["response"] = text
    record["stop"] = "eos" if response.ended else "length"
    if response.topk_ids is not None:
        record["response_ids"] = response.ids.astype(int).tolist()
        record["teacher_topk"] = {
            "ids": response.topk_ids.astype(int).tolist(),
            "logprobs": np.round(response.topk_logprobs.astype(float), 5).tolist(),
        }
    return record
