"""Builds and caches the demo's data, tokenizers and models (no network).

Everything lives under ``$JDISTILL_CACHE`` (default ``~/.cache/jdistill``) in
``demo-<version>/``, is written atomically (a crash never leaves half an
asset) and is reused by later runs:

* ``data/{teacher_train,train,validation,test}.jsonl`` (:mod:`jdistill.demo.tasks`);
* ``tokenizer_a/`` (BPE) and ``tokenizer_b/`` (WordPiece): two different
  vocabularies trained with ``tokenizers`` on the demo text, saved in HF format;
* ``teacher/`` (tokenizer A) and ``teacher_b/`` (tokenizer B): trained on first
  use by jdistill's own engine (SFT on ``teacher_train``), saved as HF directories;
* ``student/`` (tokenizer A): a smaller, randomly initialised student.

Config values ``demo:<name>`` resolve to these paths (:func:`resolve`).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile

from jdistill.demo import tasks

VERSION = "v1"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]

# Model shapes (Llama family): the same code as real checkpoints, smaller configs.
TEACHER_SHAPE = dict(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=32, mlp_dim=384)
STUDENT_SHAPE = dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, mlp_dim=192)
TEACHER_TRAINING = dict(steps=700, batch_size=32, learning_rate=3e-3, warmup_steps=30, weight_decay=0.0,
                        min_lr_ratio=0.1)

NAMES = ("teacher", "teacher_b", "student", "tokenizer_a", "tokenizer_b",
         "teacher_train", "train", "validation", "test")


def cache_root() -> pathlib.Path:
    base = os.environ.get("JDISTILL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "jdistill")
    return pathlib.Path(base) / f"demo-{VERSION}"


def _atomic_dir(target: pathlib.Path, build) -> pathlib.Path:
    """Runs ``build(tmp_dir)`` and renames the result to ``target`` (kept if it exists)."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        build(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.exists():
                raise
            # Another process (e.g. the other worker of a multi-process run) finished first: keep its copy.
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def data_dir() -> pathlib.Path:
    def build(tmp):
        for split, records in tasks.demo_splits().items():
            with open(tmp / f"{split}.jsonl", "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)

    return _atomic_dir(cache_root() / "data", build)


def _corpus() -> list[str]:
    texts = []
    for split in ("teacher_train", "train", "validation", "test"):
        with open(data_dir() / f"{split}.jsonl", encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                texts.append(record["prompt"] + record["response"])
    return texts


def _save_tokenizer(backend, directory: pathlib.Path) -> None:
    import tokenizers
    import transformers

    bos = backend.token_to_id("<s>")
    backend.post_processor = tokenizers.processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(directory)


def tokenizer_dir(which: str) -> pathlib.Path:
    """``'a'``: byte-level BPE (vocabulary 512); ``'b'``: WordPiece (vocabulary 384)."""
    import tokenizers

    def build_a(tmp):
        backend = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
        backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = tokenizers.decoders.ByteLevel()
        trainer = tokenizers.trainers.BpeTrainer(
            vocab_size=512, special_tokens=SPECIAL_TOKENS,
            initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )
        backend.train_from_iterator(_corpus(), trainer)
        _save_tokenizer(backend, tmp)

    def build_b(tmp):
        backend = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token="<unk>"))
        backend.normalizer = tokenizers.normalizers.Lowercase()
        backend.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
        backend.decoder = tokenizers.decoders.WordPiece()
        trainer = tokenizers.trainers.WordPieceTrainer(vocab_size=384, special_tokens=SPECIAL_TOKENS, show_progress=False)
        backend.train_from_iterator(_corpus(), trainer)
        _save_tokenizer(backend, tmp)

    builders = {"a": build_a, "b": build_b}
    return _atomic_dir(cache_root() / f"tokenizer_{which}", builders[which])


def _init_model_dir(target: pathlib.Path, tokenizer_path: pathlib.Path, shape: dict, seed: int) -> pathlib.Path:
    def build(tmp):
        import transformers

        from jdistill import models

        tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_path)
        config = models.DecoderConfig(
            model_type="llama", vocab_size=len(tokenizer), max_position_embeddings=256,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True, **shape,
        )
        models.save_pretrained(models.create_model(config, rngs=seed), tmp, tokenizer=tokenizer)

    return _atomic_dir(target, build)


def student_dir() -> pathlib.Path:
    return _init_model_dir(cache_root() / "student", tokenizer_dir("a"), STUDENT_SHAPE, seed=2)


def teacher_dir(which: str = "a") -> pathlib.Path:
    """The demo teacher with tokenizer ``which``, trained by jdistill on first use (a few minutes)."""
    suffix = "" if which == "a" else f"_{which}"
    target = cache_root() / f"teacher{suffix}"
    if target.exists():
        return target
    from jdistill import console
    from jdistill.engine import defaults, trainer

    init = _init_model_dir(cache_root() / f"teacher{suffix}_init", tokenizer_dir(which), TEACHER_SHAPE, seed=1)
    console.info(f"training the demo teacher{suffix} once (cached in {target}) ...")
    config = defaults.base_config()
    config.method.name = "sft"
    config.teacher.path = ""
    config.student.path = str(init)
    config.data.train_files = str(data_dir() / "teacher_train.jsonl")
    config.data.eval_files = str(data_dir() / "validation.jsonl")
    config.data.max_len, config.data.max_prompt_len = 64, 32
    config.train.steps = TEACHER_TRAINING["steps"]
    config.train.batch_size = TEACHER_TRAINING["batch_size"]
    config.train.checkpoint_every = 0
    config.optimizer.learning_rate = TEACHER_TRAINING["learning_rate"]
    config.optimizer.warmup_steps = TEACHER_TRAINING["warmup_steps"]
    # Pinned, so the cached teacher does not depend on the training defaults of later versions.
    config.optimizer.weight_decay = TEACHER_TRAINING["weight_decay"]
    config.optimizer.min_lr_ratio = TEACHER_TRAINING["min_lr_ratio"]
    config.eval.generate = False
    config.logging.tensorboard = False

    def build(tmp):
        trainer.run(config, str(tmp / "run"))
        os.replace(tmp / "run" / "student_hf", tmp / "model")
        for name in os.listdir(tmp / "model"):
            os.replace(tmp / "model" / name, tmp / name)

    return _atomic_dir(target, build)


def resolve_name(name: str) -> str:
    """The local path of demo asset ``name`` (built on first use)."""
    builders = {
        "teacher": lambda: teacher_dir("a"),
        "teacher_b": lambda: teacher_dir("b"),
        "student": student_dir,
        "tokenizer_a": lambda: tokenizer_dir("a"),
        "tokenizer_b": lambda: tokenizer_dir("b"),
    }
    if name in builders:
        return str(builders[name]())
    if name in ("teacher_train", "train", "validation", "test"):
        return str(data_dir() / f"{name}.jsonl")
    raise ValueError(f"Unknown demo asset 'demo:{name}'; choose one of {', '.join('demo:' + n for n in NAMES)}.")


PATH_FIELDS = ("teacher.path", "teacher.tokenizer", "student.path", "student.tokenizer",
               "data.train_files", "data.eval_files")


def uses_demo(config) -> bool:
    return any(str(config_value(config, f)).startswith("demo:") for f in PATH_FIELDS)


def config_value(config, dotted: str):
    """``config['a']['b']`` for ``dotted = 'a.b'``."""
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def resolved(config):
    """A copy of ``config`` with every ``demo:<name>`` path replaced by the built asset's path.

    The entry point calls it before training (the engine never sees a
    ``demo:`` path, and never writes the config it is given).
    """
    import ml_collections

    out = ml_collections.ConfigDict(config.to_dict())
    for field in PATH_FIELDS:
        value = str(config_value(out, field))
        if value.startswith("demo:"):
            group, key = field.split(".")
            out[group][key] = resolve_name(value[len("demo:"):])
    return out
