"""Builds and caches the demo's data, tokenizers and models (no network).

Everything lives under ``$JDISTILL_CACHE`` (default ``~/.cache/jdistill``) in
``demo-<version>/``, is written atomically (a crash never leaves half an
asset) and is reused by later runs. The regime follows the papers' (DSKD and
DistiLLM-2 distil pre-trained models): bases are pre-trained as causal LMs on
unlabelled text first, the teacher is then fine-tuned on its task data.

* ``data/{teacher_train,train,validation,test,prompts,corpus,teacher_corpus}.jsonl``
  (:mod:`jdistill.demo.tasks`, :mod:`jdistill.demo.world`);
* ``tokenizer_a/`` (BPE) and ``tokenizer_b/`` (WordPiece): two different
  vocabularies trained with ``tokenizers`` on the demo text, saved in HF format;
* ``teacher_base/`` (``teacher_b_base/``): the larger model pre-trained on the
  teacher's corpus (the student's plus field notes on habits); ``teacher/`` (``teacher_b/``): it fine-tuned on ``teacher_train``;
* ``student/``: the smaller model pre-trained on the corpus for fewer steps
  (the student's base); ``student_sft/``: it fine-tuned on ``train``, the warm
  start of on-policy methods, as in GKD and DistiLLM-2.

Each is built by jdistill's own engine on first use. Config values
``demo:<name>`` resolve to these paths (:func:`resolve_name`).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile

from jdistill.demo import tasks

VERSION = "v2"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]

# Model shapes (Llama family): the same code as real checkpoints, smaller configs.
TEACHER_SHAPE = dict(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=32, mlp_dim=384)
STUDENT_SHAPE = dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, mlp_dim=192)
# Training recipes of the cached models (SFT loss = causal LM on the document body for pre-training).
_RECIPE = dict(batch_size=32, weight_decay=0.0, min_lr_ratio=0.1, max_len=64)
TEACHER_PRETRAINING = dict(_RECIPE, steps=600, learning_rate=3e-3, warmup_steps=40, max_len=72)
STUDENT_PRETRAINING = dict(_RECIPE, steps=400, learning_rate=3e-3, warmup_steps=40, max_len=72)
TEACHER_FINETUNING = dict(_RECIPE, steps=300, learning_rate=1e-3, warmup_steps=20)
STUDENT_SFT = dict(_RECIPE, steps=200, learning_rate=1e-3, warmup_steps=20)

DATA_SPLITS = ("teacher_train", "train", "validation", "test", "prompts", "corpus", "teacher_corpus")
NAMES = ("teacher", "teacher_b", "teacher_base", "student", "student_sft", "student_init",
         "tokenizer_a", "tokenizer_b") + DATA_SPLITS


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
    for split in ("teacher_train", "train", "corpus", "teacher_corpus"):
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


def _trained_dir(target: pathlib.Path, *, start: pathlib.Path, split: str, recipe: dict, what: str) -> pathlib.Path:
    """``start`` trained on the demo's ``split`` by ``recipe`` (:func:`trained_model_dir`)."""
    return trained_model_dir(target, start=start, train_file=data_dir() / f"{split}.jsonl",
                             eval_file=data_dir() / "validation.jsonl", recipe=recipe, what=f"demo's {what}")


def trained_model_dir(target, *, start, train_file, eval_file, recipe: dict, what: str) -> pathlib.Path:
    """``start`` trained with jdistill's own engine (SFT loss) on ``train_file`` by ``recipe``, saved at ``target``.

    ``recipe``: steps, batch_size, max_len, learning_rate, warmup_steps,
    weight_decay, min_lr_ratio (and optionally seed), e.g.
    :data:`TEACHER_FINETUNING`. Kept as is when ``target`` exists.
    """
    target = pathlib.Path(target)
    if target.exists():
        return target
    from jdistill import console
    from jdistill.engine import defaults, trainer

    console.info(f"building the {what} once (cached in {target}) ...")
    config = defaults.base_config("sft")
    config.teacher.path = ""
    config.student.path = str(start)
    config.data.train_files = str(train_file)
    config.data.eval_files = str(eval_file)
    config.data.max_len, config.data.max_prompt_len = recipe["max_len"], 32
    config.train.steps = recipe["steps"]
    config.train.batch_size = recipe["batch_size"]
    config.train.seed = recipe.get("seed", 0)
    config.train.checkpoint_every = 0
    # Pinned, so the cached models do not depend on the training defaults of later versions.
    config.optimizer.learning_rate = recipe["learning_rate"]
    config.optimizer.warmup_steps = recipe["warmup_steps"]
    config.optimizer.weight_decay = recipe["weight_decay"]
    config.optimizer.min_lr_ratio = recipe["min_lr_ratio"]
    config.eval.generate = False
    config.eval.max_examples = 128
    config.logging.tensorboard = False

    def build(tmp):
        trainer.run(config, str(tmp / "run"))
        for name in os.listdir(tmp / "run" / "student_hf"):
            os.replace(tmp / "run" / "student_hf" / name, tmp / name)
        shutil.rmtree(tmp / "run")

    return _atomic_dir(target, build)


def _tokenizer_suffix(which: str) -> str:
    return "" if which == "a" else f"_{which}"


def teacher_base_dir(which: str = "a") -> pathlib.Path:
    """The teacher's base: pre-trained as a causal LM on its unlabelled corpus (tokenizer ``which``)."""
    suffix = _tokenizer_suffix(which)
    init = _init_model_dir(cache_root() / f"teacher{suffix}_init", tokenizer_dir(which), TEACHER_SHAPE, seed=1)
    return _trained_dir(cache_root() / f"teacher{suffix}_base", start=init, split="teacher_corpus",
                        recipe=TEACHER_PRETRAINING, what=f"teacher{suffix} base (pre-training on the corpus)")


def teacher_dir(which: str = "a") -> pathlib.Path:
    """The demo teacher with tokenizer ``which``: its base fine-tuned on ``teacher_train``."""
    suffix = _tokenizer_suffix(which)
    target = cache_root() / f"teacher{suffix}"
    if target.exists():
        return target
    return _trained_dir(target, start=teacher_base_dir(which), split="teacher_train",
                        recipe=TEACHER_FINETUNING, what=f"teacher{suffix} (fine-tuning on its task data)")


def student_init_dir() -> pathlib.Path:
    """The student's shape with random weights (``demo:student_init``: from-scratch ablations, quick tests)."""
    return _init_model_dir(cache_root() / "student_init", tokenizer_dir("a"), STUDENT_SHAPE, seed=2)


def student_dir() -> pathlib.Path:
    """The student's base: a smaller model pre-trained on the student's corpus."""
    init = student_init_dir()
    return _trained_dir(cache_root() / "student", start=init, split="corpus", recipe=STUDENT_PRETRAINING,
                        what="student base (pre-training on the corpus)")


def student_sft_dir() -> pathlib.Path:
    """The student base fine-tuned on its labelled split: the warm start of on-policy methods (GKD, DistiLLM-2)."""
    return _trained_dir(cache_root() / "student_sft", start=student_dir(), split="train", recipe=STUDENT_SFT,
                        what="SFT-warmed student (on-policy methods start from it)")


def resolve_name(name: str) -> str:
    """The local path of demo asset ``name`` (built on first use)."""
    builders = {
        "teacher": lambda: teacher_dir("a"),
        "teacher_b": lambda: teacher_dir("b"),
        "student": student_dir,
        "student_sft": student_sft_dir,
        "student_init": student_init_dir,
        "teacher_base": lambda: teacher_base_dir("a"),
        "tokenizer_a": lambda: tokenizer_dir("a"),
        "tokenizer_b": lambda: tokenizer_dir("b"),
    }
    if name in builders:
        return str(builders[name]())
    if name in DATA_SPLITS:
        return str(data_dir() / f"{name}.jsonl")
    raise ValueError(f"Unknown demo asset 'demo:{name}'; choose one of {', '.join('demo:' + n for n in NAMES)}.")


PATH_FIELDS = ("teacher.path", "teacher.tokenizer", "student.path", "student.tokenizer",
               "data.train_files", "data.eval_files")


# Comma-separated lists of paths (a multi-teacher run's extra teachers); fields a config may not have.
LIST_FIELDS = ("teacher.extra_paths", "teacher.extra_tokenizers")


def _list_entries(config, dotted: str) -> list[str]:
    group, key = dotted.split(".")
    value = str(config[group].get(key, "") or "")
    return [part.strip() for part in value.split(",") if part.strip()]


def uses_demo(config) -> bool:
    return (any(str(config_value(config, f)).startswith("demo:") for f in PATH_FIELDS)
            or any(e.startswith("demo:") for f in LIST_FIELDS for e in _list_entries(config, f)))


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
    for field in LIST_FIELDS:
        entries = _list_entries(out, field)
        if any(e.startswith("demo:") for e in entries):
            group, key = field.split(".")
            out[group][key] = ",".join(resolve_name(e[len("demo:"):]) if e.startswith("demo:") else e
                                       for e in entries)
    return out
