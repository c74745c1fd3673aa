"""Output records: one JSON object per answered prompt (text only; top-k rows go to a store)."""

from __future__ import annotations

from jdistill.sampling import Response
from jdistill.teacher_data.batches import TokenizedPrompt


def response_record(item: TokenizedPrompt, response: Response, tokenizer) -> dict:
    """The record of one answered prompt.

    ``{"id", "prompt", "response", "stop"}`` for text prompts;
    ``{"id", "messages", "response", "stop"}`` for chats (the conversation
    with the new assistant turn appended). ``stop`` is ``"eos"`` (the response
    ended at a stop token) or ``"length"``. The response text excludes the
    stop token. The generated ids and their top-k log-probs, when asked for,
    go to a top-k store (:mod:`jdistill.data.topk_store`), not into the record.
    """
    text = tokenizer.decode(response.text_ids.tolist(), skip_special_tokens=True)
    record = {"id": item.prompt.id}
    if isinstance(item.prompt.prompt, list):
        record["messages"] = item.prompt.prompt + [{"role": "assistant", "content": text}]
    else:
        record["prompt"] = item.prompt.prompt
    record["response"] = text
    record["stop"] = "eos" if response.ended else "length"
    return record
