"""Evaluation on held-out data: validation loss and generation quality.

* Validation loss: the method's own loss (and its parts) summed over every
  held-out response token, divided by their number.
* Generation: the model answers each held-out prompt with the jitted sampler;
  responses are scored against the references with ROUGE-L (the
  ``rouge-score`` package, ``rougeL`` F-measure with stemming, x100, as the
  DSKD / DistiLLM / MiniLLM papers report it) and exact match (equal after
  whitespace and case normalisation), averaged over ``num_samples`` seeds.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from rouge_score import rouge_scorer

from jdistill import sampling
from jdistill.data.batching import fixed_size_batches
from jdistill.data.tokenize import TokenizedExample


def to_host(array) -> np.ndarray:
    """A global array's full value on every process (gathered when other processes hold shards)."""
    if getattr(array, "is_fully_addressable", True):
        return np.asarray(jax.device_get(array))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def normalize_answer(text: str) -> str:
    return " ".join(text.lower().split())


def rouge_l(prediction: str, reference: str, scorer=None) -> float:
    """ROUGE-L F-measure x100 (stemmed), as in the DSKD / DistiLLM evaluation."""
    scorer = scorer or rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return 100.0 * scorer.score(reference, prediction)["rougeL"].fmeasure


def validation_loss(eval_fn, trainable, teacher_params, examples, *, batch_size, collate_kwargs, put_batch):
    """Token-weighted mean of every summed metric ``eval_fn`` returns over ``examples``."""
    totals: dict[str, float] = {}
    for _, batch in fixed_size_batches(examples, batch_size=batch_size, **collate_kwargs):
        out = jax.device_get(eval_fn(trainable, teacher_params, put_batch(batch)))
        for key, value in out.items():
            totals[key] = totals.get(key, 0.0) + float(value)
    tokens = max(totals.pop("response_tokens", 0.0), 1.0)
    totals.pop("sequences", None)
    return {key: value / tokens for key, value in totals.items()}


def generate_responses(
    model,
    prompts: Sequence[Sequence[int]],
    *,
    tokenizer,
    config: ml_collections.ConfigDict,
    batch_size: int,
    key,
    mesh=None,
) -> list[str]:
    """Generates one response text per prompt (token ids) with the sampler."""
    eos = getattr(tokenizer, "eos_token_id", None)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or 0)
    width = sampling.bucket_length(max(len(p) for p in prompts), "pow2")
    texts = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        ids, mask = sampling.left_pad(chunk, width, pad)
        ids, mask = sampling.fill_batch(ids, mask, batch_size)
        out = sampling.generate(
            model,
            ids,
            mask,
            key=jax.random.fold_in(key, start),
            max_new_tokens=int(config.max_new_tokens),
            temperature=float(config.temperature),
            top_k=int(config.top_k),
            top_p=float(config.top_p),
            eos_ids=() if eos is None else (eos,),
            pad_id=pad,
            prompt_buckets=None,
            mesh=mesh,
        )
        tokens, mask_out = to_host(out.tokens), to_host(out.mask)
        for row in range(len(chunk)):
            generated = [int(t) for t, m in zip(tokens[row], mask_out[row]) if m and int(t) != eos]
            texts.append(tokenizer.decode(generated, skip_special_tokens=True))
    return texts


def generation_metrics(
    model,
    examples: Sequence[TokenizedExample],
    *,
    tokenizer,
    config: ml_collections.ConfigDict,
    batch_size: int,
    seed: int,
    mesh=None,
) -> dict[str, Any]:
    """ROUGE-L and exact match of ``model``'s responses to ``examples``' prompts.

    Returns ``{'rougeL': mean, 'exact_match': mean (both x100), 'samples': [...]}``
    where ``samples`` holds the first few (prompt, reference, prediction) triples.
    """
    prompts = [e.student.ids[: e.student.prompt_len].tolist() for e in examples]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge, exact, samples = [], [], []
    greedy = float(config.temperature) == 0.0
    for sample in range(1 if greedy else max(int(config.num_samples), 1)):
        texts = generate_responses(
            model, prompts, tokenizer=tokenizer, config=config, batch_size=batch_size,
            key=jax.random.key(seed * 1000 + sample), mesh=mesh,
        )
        for example, text in zip(examples, texts):
            rouge.append(rouge_l(text, example.response, scorer))
            exact.append(100.0 * (normalize_answer(text) == normalize_answer(example.response)))
            if sample == 0 and len(samples) < 5:
                samples.append({"prompt": tokenizer.decode(example.student.ids[: example.student.prompt_len]),
                                "reference": example.response, "prediction": text})
    return {"rougeL": float(np.mean(rouge)), "exact_match": float(np.mean(exact)), "samples": samples}
