"""Scoring saved models on a dataset with the project's protocol (``python -m jdistill.evaluate``).

For every Hugging Face directory given (a teacher, a fine-tuned baseline, distilled
students, ...) on the same held-out records:

* **generation**: ROUGE-L (``rougeL`` F-measure with stemming, x100; the
  maximum over a record's references when it lists several in
  ``references``) and exact match (equal after whitespace and case
  normalisation), greedy, and sampled with ``num_samples`` seeds (the papers
  sample at temperature 1, top-p 1 and average five seeds; reported as mean
  and standard deviation over seeds);
* **likelihood**: the model's cross-entropy on the reference response tokens
  (nats per token) and its perplexity;
* **teacher agreement**, when ``reference_teacher`` is given and shares the
  model's tokenizer: the held-out forward KL from the teacher's next-token
  distribution to the model's, per response token.

Every model answers the same prompts, tokenized with its own tokenizer, and
stops at its own checkpoint's stop tokens.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx
from rouge_score import rouge_scorer

from jdistill import console, losses, models, sampling
from jdistill import data as data_lib
from jdistill.data.batching import default_buckets, fixed_size_batches
from jdistill.engine import evaluation, run_setup


def base_config() -> ml_collections.ConfigDict:
    """The scoring config, one comment per field (``configs/evaluate.py`` starts from it)."""
    c = ml_collections.ConfigDict()
    c.models = ""  # Comma-separated Hugging Face directories to score (e.g. teacher, baseline, student).
    c.names = ""  # Optional comma-separated row labels, one per model; empty = the directory names.
    c.reference_teacher = ""  # A model whose next-token distribution the others are compared with (KL); empty = none.
    c.param_dtype = "float32"  # Dtype the weights are loaded in.
    c.compute_dtype = "float32"  # Dtype of the activations.

    c.data = ml_collections.ConfigDict()
    c.data.files = ""  # Comma-separated json/jsonl/parquet files of held-out records.
    c.data.format = "auto"  # 'auto' | 'dolly' | 'prompt_response' | 'messages'.
    c.data.prompt_template = ""  # Format string with {instruction}/{context} or {prompt}; empty = default.
    c.data.max_len = 512  # Longest prompt + response in tokens (longer references are truncated, counted).
    c.data.max_prompt_len = 256  # Longest prompt in tokens.
    c.data.max_examples = 0  # Score at most this many records; 0 = all.

    c.generation = ml_collections.ConfigDict()
    c.generation.max_new_tokens = 256  # Response length limit.
    c.generation.greedy = True  # Score greedy responses.
    c.generation.num_samples = 5  # Sampled responses: seeds averaged (the papers' protocol); 0 = none.
    c.generation.temperature = 1.0  # Sampling temperature (the papers: 1.0).
    c.generation.top_p = 1.0  # Nucleus threshold of the sampling (the papers: 1.0).
    c.generation.top_k = 0  # Top-k filter of the sampling; 0 = off.
    c.generation.seed = 0  # Seeds the sampled responses (seed s of model m is the same for every model).

    c.batch_size = 16  # Prompts (and sequences) per batch.
    c.output = ""  # JSON file for the results; empty = none.
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # Data-parallel axis size; -1 = all devices.
    c.mesh.fsdp = 1  # Parameter-sharding axis size.
    c.mesh.tensor = 1  # Tensor-parallel axis size.
    return c


class ScoringError(ValueError):
    """A scoring setting that cannot work, with the setting to change."""


def _split(text: str) -> list[str]:
    return [part.strip() for part in str(text).split(",") if part.strip()]


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """The held-out records as text: ``(id, prompt, response)`` examples and each record's references."""

    examples: list
    references: dict[str, list[str]]


def load_held_out(config: ml_collections.ConfigDict, tokenizer) -> HeldOut:
    """Reads ``config.data``'s records; a record's ``references`` list (if any) adds valid responses."""
    records = data_lib.load_records(config.data.files, split="test")
    if config.data.max_examples:
        records = records[: int(config.data.max_examples)]
    text, skips = data_lib.to_text_examples(
        records, fmt=config.data.format, tokenizer=tokenizer, prompt_template=config.data.prompt_template or None,
        on_bad_record="skip",
    )
    if not text:
        raise ScoringError(f"No usable record in {config.data.files} ({skips.summary()}).")
    references = {}
    for index, record in enumerate(records):
        extra = record.get("references") if isinstance(record, dict) else None
        if isinstance(extra, list) and all(isinstance(r, str) for r in extra):
            references[str(record.get("id", index))] = list(extra)
    return HeldOut(text, references)


def _references(held_out: HeldOut, example) -> list[str]:
    return held_out.references.get(example.id) or [example.response]


def best_rouge_l(prediction: str, references: Sequence[str], scorer) -> float:
    """ROUGE-L F-measure x100, the best over the references (the papers' multi-reference rule)."""
    return max(evaluation.rouge_l(prediction, reference, scorer) for reference in references)


def _likelihood_fn(student_graphdef, teacher_graphdef, vocab_rows: int):
    """Jitted ``(student params, teacher params, batch) -> summed CE, summed KL(teacher || student), tokens``."""

    def fn(student_params, teacher_params, batch):
        student = nnx.merge(student_graphdef, student_params)
        logits = student(batch["input_ids"], batch["attention_mask"]).logits[..., :vocab_rows]
        mask = batch["loss_mask"]
        ce = losses.token_mean(losses.token_cross_entropy(logits, batch["targets"]), mask, normalizer=1.0)
        out = {"ce": ce, "tokens": mask.sum()}
        if teacher_graphdef is not None:
            teacher = nnx.merge(teacher_graphdef, teacher_params)
            teacher_logits = teacher(batch["input_ids"], batch["attention_mask"]).logits[..., :vocab_rows]
            out["kl"] = losses.token_mean(losses.forward_kl(logits, teacher_logits), mask, normalizer=1.0)
        return out

    return jax.jit(fn)


def likelihood(model, tokenized, *, tokenizer, batch_size: int, max_len: int, teacher=None) -> dict:
    """Cross-entropy (nats per response token), perplexity and, with ``teacher``, the held-out KL."""
    graphdef, params = nnx.split(model)
    teacher_graphdef = teacher_params = None
    if teacher is not None:
        teacher_graphdef, teacher_params = nnx.split(teacher)
    fn = _likelihood_fn(graphdef, teacher_graphdef, len(tokenizer))
    totals: dict[str, float] = {}
    collate = dict(buckets=default_buckets(max_len), pad_id=tokenizer.pad_token_id)
    for _, batch in fixed_size_batches(tokenized, batch_size=batch_size, **collate):
        for key, value in jax.device_get(fn(params, teacher_params, batch)).items():
            totals[key] = totals.get(key, 0.0) + float(value)
    tokens = max(totals.pop("tokens", 0.0), 1.0)
    out = {"ce": totals["ce"] / tokens}
    out["perplexity"] = math.exp(min(out["ce"], 50.0))
    if "kl" in totals:
        out["teacher_kl"] = totals["kl"] / tokens
    return out


def generation_scores(model, tokenized, held_out: HeldOut, *, tokenizer, checkpoint_dir: str,
                      config: ml_collections.ConfigDict, mesh) -> dict:
    """Greedy and sampled ROUGE-L / exact match (sampled: mean and std over seeds)."""
    g = config.generation
    prompts = [e.student.ids[: e.student.prompt_len].tolist() for e in tokenized]
    stop = sampling.stop_tokens(tokenizer, checkpoint_dir, model.config)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    by_id = {e.id: e for e in held_out.examples}

    def score(texts):
        rouge, exact = [], []
        for example, text in zip(tokenized, texts):
            refs = _references(held_out, by_id[example.id])
            rouge.append(best_rouge_l(text, refs, scorer))
            exact.append(100.0 * any(evaluation.normalize_answer(text) == evaluation.normalize_answer(r)
                                     for r in refs))
        return float(np.mean(rouge)), float(np.mean(exact))

    def texts_for(settings, key):
        return evaluation.response_texts(model, prompts, tokenizer=tokenizer, settings=settings, stop=stop,
                                         batch_size=int(config.batch_size), key=key, mesh=mesh)

    out: dict[str, Any] = {}
    if g.greedy:
        greedy = sampling.SamplingSettings(max_new_tokens=int(g.max_new_tokens), temperature=0.0)
        out["rougeL_greedy"], out["exact_match_greedy"] = score(texts_for(greedy, None))
    if int(g.num_samples) > 0:
        settings = sampling.SamplingSettings(max_new_tokens=int(g.max_new_tokens), temperature=float(g.temperature),
                                             top_p=float(g.top_p), top_k=int(g.top_k))
        per_seed = [score(texts_for(settings, jax.random.key(int(g.seed) * 1000 + s)))
                    for s in range(int(g.num_samples))]
        rouge, exact = np.asarray(per_seed).T
        out.update(rougeL_sampled=float(rouge.mean()), rougeL_sampled_std=float(rouge.std(ddof=1)) if len(rouge) > 1
                   else 0.0, exact_match_sampled=float(exact.mean()), rougeL_per_seed=[float(r) for r in rouge])
    return out


def score_model(model_dir: str, config: ml_collections.ConfigDict, *, mesh, teacher=None,
                teacher_tokenizer=None) -> dict:
    """Every metric of the module docstring for the model in ``model_dir``."""
    tokenizer = run_setup.load_tokenizer(model_dir, "model")
    model = models.load_pretrained(model_dir, dtype=config.param_dtype, compute_dtype=config.compute_dtype, mesh=mesh)
    held_out = load_held_out(config, tokenizer)
    tokenized, stats = data_lib.tokenize_examples(
        held_out.examples, tokenizer, max_len=int(config.data.max_len), max_prompt_len=int(config.data.max_prompt_len)
    )
    same_vocabulary = teacher_tokenizer is not None and run_setup.same_vocabulary(tokenizer, teacher_tokenizer)
    if teacher is not None and not same_vocabulary:
        console.info(f"{model_dir}: its tokenizer differs from reference_teacher's; no teacher KL for it")
    row = {"examples": len(tokenized), "truncated": stats.truncated}
    row.update(likelihood(model, tokenized, tokenizer=tokenizer, batch_size=int(config.batch_size),
                          max_len=int(config.data.max_len), teacher=teacher if same_vocabulary else None))
    row.update(generation_scores(model, tokenized, held_out, tokenizer=tokenizer, checkpoint_dir=model_dir,
                                 config=config, mesh=mesh))
    return row


COLUMNS = ("rougeL_greedy", "exact_match_greedy", "rougeL_sampled", "rougeL_sampled_std", "exact_match_sampled",
           "ce", "perplexity", "teacher_kl")


def markdown(rows: Sequence[dict]) -> str:
    """The results as a markdown table (the columns present in any row)."""
    columns = ["model"] + [c for c in COLUMNS if any(c in r for r in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [row["model"]] + [f"{row[c]:.3f}" if c in ("ce", "teacher_kl") else
                                  f"{row[c]:.2f}" if c in row else "" for c in columns[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(config: ml_collections.ConfigDict) -> list[dict]:
    """Scores every model of ``config.models``; prints a table and writes ``config.output`` (JSON)."""
    model_dirs = _split(config.models)
    if not model_dirs:
        raise ScoringError("No model given: set --config.models=DIR[,DIR...] (Hugging Face directories).")
    for path in model_dirs + ([config.reference_teacher] if config.reference_teacher else []):
        if not os.path.isdir(path):
            raise ScoringError(f"{path!r} is not a directory (a Hugging Face model directory).")
    if not config.data.files:
        raise ScoringError("No data given: set --config.data.files=PATH[,PATH...] (json, jsonl or parquet).")
    names = _split(config.names) or [os.path.basename(os.path.normpath(p)) for p in model_dirs]
    if len(names) != len(model_dirs):
        raise ScoringError(f"config.names has {len(names)} labels for {len(model_dirs)} models.")
    mesh = models.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    teacher = teacher_tokenizer = None
    if config.reference_teacher:
        teacher_tokenizer = run_setup.load_tokenizer(config.reference_teacher, "reference_teacher")
        teacher = models.load_pretrained(config.reference_teacher, dtype=config.param_dtype,
                                         compute_dtype=config.compute_dtype, mesh=mesh)
    rows = []
    for name, path in zip(names, model_dirs):
        console.info(f"scoring {name} ({path})")
        rows.append({"model": name, "path": path,
                     **score_model(path, config, mesh=mesh, teacher=teacher, teacher_tokenizer=teacher_tokenizer)})
    if jax.process_index() == 0:
        print("\n" + markdown(rows) + "\n", flush=True)
        if config.output:
            os.makedirs(os.path.dirname(os.path.abspath(config.output)), exist_ok=True)
            with open(config.output, "w", encoding="utf-8") as f:
                json.dump({"config": config.to_dict(), "results": rows}, f, indent=1)
    return rows


__all__ = ["HeldOut", "ScoringError", "base_config", "best_rouge_l", "likelihood", "markdown", "run", "score_model"]
