"""Tokenized prompts (batching is the generation service's rule: :func:`jdistill.sampling.prompt_batches`)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

from jdistill.data.prompts import Prompt
from jdistill.data.records import SkipReport


@dataclasses.dataclass(frozen=True)
class TokenizedPrompt:
    prompt: Prompt
    ids: list[int]


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
