"""Evaluation on held-out data: validation loss and generation quality.

* Validation loss: the method's own loss (and its parts) summed over every
  held-out response token, divided by their number.
* Generation: the model answers each held-out prompt with the generation
  service (:func:`jdistill.sampling.generate_responses`), stopping at the
  checkpoint's stop tokens (tokenizer EOS and ``generation_config.json``'s
  end-of-turn ids). Responses are scored against the references with ROUGE-L
  (the ``rouge-score`` package, ``rougeL`` F-measure with stemming, x100, as the
  instruction-distillation papers report it) and exact match (equal after
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


def normalize_answer(text: str) -> str:
    return " ".join(text.lower().split())


def rouge_l(prediction: str, reference: str, scorer=None) -> float:
    """ROUGE-L F-measure x100 (stemmed), as the instruction-distillation papers report it."""
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


def eval_settings(config: ml_collections.ConfigDict) -> sampling.SamplingSettings:
    """The sampling settings of ``config.eval`` (no min-p filter)."""
    return sampling.SamplingSettings(
        max_new_tokens=int(config.max_new_tokens), temperature=float(config.temperature),
        top_p=float(config.top_p), top_k=int(config.top_k),
    )


def response_texts(
    model,
    prompts: Sequence[Sequence[int]],
    *,
    tokenizer,
    settings: sampling.SamplingSettings,
    stop: sampling.StopTokens,
    batch_size: int,
    key,
    mesh=None,
) -> list[str]:
    """One response text per prompt (token ids), without its stop token, in prompt order."""
    responses = sampling.generate_responses(
        model, prompts, settings, stop, batch_size=batch_size, key=key, mesh=mesh
    )
    return [tokenizer.decode(r.text_ids.tolist(), skip_special_tokens=True) for r in responses]


def generation_metrics(
    model,
    examples: Sequence[TokenizedExample],
    *,
    tokenizer,
    config: ml_collections.ConfigDict,
    batch_size: int,
    seed: int,
    checkpoint_dir: str | None,
    mesh=None,
) -> dict[str, Any]:
    """ROUGE-L and exact match of ``model``'s responses to ``examples``' prompts.

    Responses stop at the stop tokens of ``tokenizer`` and ``checkpoint_dir``
    (the model's Hugging Face directory, whose ``generation_config.json`` lists
    a chat model's end-of-turn token; see :func:`jdistill.sampling.stop_tokens`).

    Returns ``{'rougeL': mean, 'exact_match': mean (both x100), 'samples': [...],
    'rougeL_per_example': [...]}`` where ``samples`` holds the first few
    (prompt, reference, prediction) triples and ``rougeL_per_example`` each
    example's ROUGE-L (averaged over the sampled responses), in ``examples``'
    order, for paired comparisons of two models.
    """
    prompts = [e.student.ids[: e.student.prompt_len].tolist() for e in examples]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge, exact, samples = [], [], []
    settings = eval_settings(config)
    stop = sampling.stop_tokens(tokenizer, checkpoint_dir, model.config)
    greedy = settings.temperature == 0.0
    for sample in range(1 if greedy else max(int(config.num_samples), 1)):
        texts = response_texts(
            model, prompts, tokenizer=tokenizer, settings=settings, stop=stop, batch_size=batch_size,
            key=jax.random.key(seed * 1000 + sample), mesh=mesh,
        )
        for example, text in zip(examples, texts):
            rouge.append(rouge_l(text, example.response, scorer))
            exact.append(100.0 * (normalize_answer(text) == normalize_answer(example.response)))
            if sample == 0 and len(samples) < 5:
                samples.append({"prompt": tokenizer.decode(example.student.ids[: example.student.prompt_len]),
                                "reference": example.response, "prediction": text})
    per_example = np.mean(np.reshape(rouge, (-1, len(examples))), axis=0) if examples else np.zeros(0)
    return {"rougeL": float(np.mean(rouge)), "exact_match": float(np.mean(exact)), "samples": samples,
            "rougeL_per_example": per_example.tolist()}
