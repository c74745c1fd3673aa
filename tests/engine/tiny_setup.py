"""Tiny, fully local training set-ups: a word-level tokenizer, HF-format models, jsonl data."""

from __future__ import annotations

import json
import pathlib
import random

import tokenizers
import transformers

from jdistill import models

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]


def arithmetic_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        records.append({"id": f"r{i}", "prompt": f"what is {a} plus {b} ?", "response": f"it is {a + b} ."})
    return records


def write_jsonl(path: pathlib.Path, records) -> pathlib.Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def make_tokenizer(directory: pathlib.Path, texts, *, extra_words=()) -> transformers.PreTrainedTokenizerFast:
    words = sorted({w for t in texts for w in t.split()} | set(extra_words))
    vocab = {tok: i for i, tok in enumerate(SPECIAL + words)}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    backend.post_processor = tokenizers.processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(directory)
    return tokenizer


def make_model_dir(directory: pathlib.Path, tokenizer, *, hidden=32, layers=2, heads=4, kv_heads=2, seed=0,
                   vocab_size=None) -> pathlib.Path:
    config = models.DecoderConfig(
        model_type="llama",
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=hidden // heads,
        mlp_dim=2 * hidden,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        init_std=0.1,
    )
    models.save_pretrained(models.create_model(config, rngs=seed), directory, tokenizer=tokenizer)
    return directory


def make_setup(root: pathlib.Path, *, n_train=48, n_eval=8):
    """A teacher, a student (same tokenizer) and train/eval files under ``root``."""
    train = arithmetic_records(n_train, seed=0)
    evals = arithmetic_records(n_eval, seed=1)
    texts = [r["prompt"] + " " + r["response"] for r in train + evals]
    tokenizer = make_tokenizer(root / "tok", texts, extra_words=[str(i) for i in range(19)])
    teacher = make_model_dir(root / "teacher", tokenizer, hidden=48, seed=1)
    student = make_model_dir(root / "student", tokenizer, hidden=32, seed=2)
    return {
        "teacher": str(teacher),
        "student": str(student),
        "train": str(write_jsonl(root / "train.jsonl", train)),
        "eval": str(write_jsonl(root / "eval.jsonl", evals)),
        "tokenizer": tokenizer,
    }


def tiny_config(setup, method="kd", **overrides):
    from jdistill.engine.defaults import base_config

    c = base_config(method)
    c.teacher.path = setup["teacher"]
    c.teacher.param_dtype = "float32"
    c.teacher.compute_dtype = "float32"
    c.student.path = setup["student"]
    c.data.train_files = setup["train"]
    c.data.eval_files = setup["eval"]
    c.data.max_len = 32
    c.data.max_prompt_len = 16
    c.data.buckets = "16,32"
    c.optimizer.learning_rate = 3e-3
    c.train.steps = 6
    c.train.batch_size = 8
    c.train.checkpoint_every = 0
    c.eval.batch_size = 8
    c.eval.max_new_tokens = 6
    c.logging.every = 2
    c.logging.progress_bar = False
    c.logging.tensorboard = False
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def make_tokenizer_b(directory: pathlib.Path, texts) -> transformers.PreTrainedTokenizerFast:
    """A second word-level tokenizer with a different vocabulary: digits split one by one,
    special tokens in another order and no BOS (so BOS is on the student's side only)."""
    pre = tokenizers.pre_tokenizers.Sequence(
        [tokenizers.pre_tokenizers.WhitespaceSplit(), tokenizers.pre_tokenizers.Digits(individual_digits=True)]
    )
    words = sorted({piece for t in texts for piece, _ in pre.pre_tokenize_str(t)} | set("0123456789"))
    special = ["<unk>", "<eos>", "<pad>"]
    vocab = {tok: i for i, tok in enumerate(special + words)}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(directory)
    return tokenizer


def make_cross_setup(root: pathlib.Path, *, n_train=48, n_eval=8):
    """Like :func:`make_setup`, plus ``teacher_b``: a teacher with tokenizer B (another vocabulary)."""
    setup = make_setup(root, n_train=n_train, n_eval=n_eval)
    texts = [r["prompt"] + " " + r["response"] for r in arithmetic_records(n_train + n_eval)]
    tokenizer_b = make_tokenizer_b(root / "tok_b", texts)
    setup["teacher_b"] = str(make_model_dir(root / "teacher_b", tokenizer_b, hidden=48, seed=3))
    setup["tokenizer_b"] = tokenizer_b
    return setup
