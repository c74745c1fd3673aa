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


END_OF_TURN = "<eot>"


def make_chat_setup(root: pathlib.Path, *, n_train=16, n_eval=8) -> dict:
    """A chat-style checkpoint whose end-of-turn id differs from its tokenizer's EOS.

    ``root/chat`` holds a tokenizer (EOS ``</s>``; ``<eot>`` is an ordinary
    word), a decoder whose ``config.json`` names ``</s>`` and a
    ``generation_config.json`` with ``eos_token_id = [</s>, <eot>]``, as chat
    models ship them. The decoder is a fixed bigram model that ignores its
    context: after any token but ``it`` it says ``it``; after ``it``,
    ``<eot>``; after ``<eot>``, ``plus`` (forever). Every prompt is thus
    answered ``it <eot>`` when generation stops at the end of the turn, and
    ``it <eot> plus plus ...`` when it stops at ``</s>`` alone.

    How: one-hot embeddings (``hidden >= vocab``), attention and MLP output
    projections at zero (the blocks add nothing to the residual stream) and an
    LM head whose column ``next(t)`` reads dimension ``t`` with weight 10.

    Returns ``make_setup``'s keys (the chat checkpoint is both ``student`` and
    ``teacher``) plus ``answer``, ``eos_id``, ``end_of_turn_id``,
    ``after_turn_id`` (``it``, ``</s>``, ``<eot>``, ``plus`` ids).
    """
    import json as json_lib

    import jax
    import numpy as np
    from flax import nnx

    from jdistill.models.param_paths import map_with_param_path

    train = arithmetic_records(n_train, seed=0)
    evals = arithmetic_records(n_eval, seed=1)
    texts = [r["prompt"] + " " + r["response"] for r in train + evals]
    tokenizer = make_tokenizer(root / "tok", texts, extra_words=[str(i) for i in range(19)] + [END_OF_TURN])
    ids = {word: tokenizer.convert_tokens_to_ids(word) for word in ("it", END_OF_TURN, "plus")}
    answer, end_of_turn, after_turn = ids["it"], ids[END_OF_TURN], ids["plus"]
    assert end_of_turn != tokenizer.eos_token_id
    vocab, hidden = len(tokenizer), 64
    assert vocab <= hidden, "one-hot embeddings need hidden >= vocab"
    config = models.DecoderConfig(
        model_type="llama", vocab_size=vocab, hidden_size=hidden, num_layers=1, num_heads=4, num_kv_heads=2,
        head_dim=hidden // 4, mlp_dim=hidden, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    following = np.full(vocab, answer)
    following[answer], following[end_of_turn], following[after_turn] = end_of_turn, after_turn, after_turn
    head = np.zeros((hidden, vocab), np.float32)
    head[np.arange(vocab), following] = 10.0
    rng = np.random.default_rng(0)

    def weight(path, leaf):
        if path.endswith("norm/scale"):
            value = np.ones(leaf.shape)
        elif path.endswith(("o_proj/kernel", "down_proj/kernel")):
            value = np.zeros(leaf.shape)
        elif path == "embed/embedding":
            value = np.eye(vocab, hidden)
        elif path == "lm_head/kernel":
            value = head
        else:
            value = rng.normal(0.0, 0.1, leaf.shape)
        return jax.numpy.asarray(value, leaf.dtype)

    graphdef, state = nnx.split(nnx.eval_shape(lambda: models.create_model(config, rngs=0)))
    model = nnx.merge(graphdef, map_with_param_path(weight, state))
    directory = root / "chat"
    models.save_pretrained(model, directory, tokenizer=tokenizer)
    (directory / "generation_config.json").write_text(
        json_lib.dumps({"eos_token_id": [tokenizer.eos_token_id, end_of_turn]})
    )
    return {
        "teacher": str(directory),
        "student": str(directory),
        "train": str(write_jsonl(root / "train.jsonl", train)),
        "eval": str(write_jsonl(root / "eval.jsonl", evals)),
        "tokenizer": tokenizer,
        "answer": answer,
        "eos_id": tokenizer.eos_token_id,
        "end_of_turn_id": end_of_turn,
        "after_turn_id": after_turn,
    }
