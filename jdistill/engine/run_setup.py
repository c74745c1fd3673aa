"""Everything a run needs before its first step: tokenizers, models, data.

Each builder checks its part of the config and fails with a message that
names the setting to change.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import ml_collections
from flax import nnx

from jdistill import data as data_lib
from jdistill.data.lm_text import LMWindows, read_documents
from jdistill import models
from jdistill.models import lora as model_lora
from jdistill import console
from jdistill.engine import run_health
from jdistill.engine.teacher_source import teacher_source
from jdistill.methods import DataContext, DataSpec, Method, ModelFacts, cross_vocabulary_methods


class ConfigError(ValueError):
    """A configuration that cannot run, with the setting to change."""


def validate(config: ml_collections.ConfigDict, num_batch_shards: int) -> None:
    """What the mesh asks of the batch sizes (every field's own range: :mod:`jdistill.engine.config_checks`)."""
    train = config.train
    micro = train.batch_size // train.grad_accum
    if micro % num_batch_shards:
        raise ConfigError(
            f"Each micro-batch ({micro} = batch_size / grad_accum) must split evenly over the "
            f"{num_batch_shards} data-parallel shards of the mesh; change train.batch_size, "
            "train.grad_accum or mesh.data / mesh.fsdp."
        )
    if config.eval.batch_size % num_batch_shards:
        raise ConfigError(
            f"eval.batch_size ({config.eval.batch_size}) must be a multiple of the {num_batch_shards} "
            "data-parallel shards of the mesh."
        )


def eval_interval(config: ml_collections.ConfigDict, train_source) -> int:
    """Steps between periodic evaluations: ``eval.every``, ``-1`` = once per epoch, 0 = none."""
    every = int(config.eval.every)
    if every < -1:
        raise ConfigError(f"eval.every must be >= 0 steps, or -1 for once per epoch; got {every}.")
    return max(int(train_source.steps_per_epoch), 1) if every == -1 else every


def load_tokenizer(path: str, what: str):
    from transformers import AutoTokenizer  # transformers is only needed here and in data prep.

    if not path:
        raise ConfigError(
            f"No {what} given: set --config.{what}.path=DIR (a Hugging Face directory with config.json, "
            "*.safetensors and tokenizer files)."
        )
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def same_vocabulary(a, b) -> bool:
    return a.get_vocab() == b.get_vocab()


@dataclasses.dataclass
class Models:
    student: Any
    teacher: Any | None
    student_tokenizer: Any
    teacher_tokenizer: Any | None
    # The teachers of teacher.extra_paths (methods with Method.teacher_list), in order, and their tokenizers.
    extra_teachers: tuple = ()
    extra_teacher_tokenizers: tuple = ()

    @property
    def teachers(self) -> tuple:
        """Every loaded teacher: ``teacher.path``'s first, then ``teacher.extra_paths``'s."""
        return () if self.teacher is None else (self.teacher, *self.extra_teachers)

    @property
    def teacher_tokenizers(self) -> tuple:
        return () if self.teacher is None else (self.teacher_tokenizer, *self.extra_teacher_tokenizers)


def load_student_tokenizer(config: ml_collections.ConfigDict):
    return load_tokenizer(config.student.tokenizer or config.student.path, "student")


def _entries(text) -> list[str]:
    return [part.strip() for part in str(text or "").split(",")] if str(text or "").strip() else []


def extra_teacher_paths(config: ml_collections.ConfigDict) -> list[tuple[str, str]]:
    """``(path, tokenizer path)`` of each teacher of ``teacher.extra_paths`` (tokenizer: ``teacher.extra_tokenizers``)."""
    paths = _entries(config.teacher.get("extra_paths", ""))
    tokenizers = _entries(config.teacher.get("extra_tokenizers", ""))
    if any(not p for p in paths):
        raise ConfigError(f"teacher.extra_paths has an empty entry: {config.teacher.get('extra_paths')!r}.")
    if len(tokenizers) > len(paths):
        raise ConfigError(
            f"teacher.extra_tokenizers names {len(tokenizers)} tokenizers for {len(paths)} teacher.extra_paths."
        )
    tokenizers += [""] * (len(paths) - len(tokenizers))
    return [(path, tokenizer or path) for path, tokenizer in zip(paths, tokenizers)]


def model_facts(config: ml_collections.ConfigDict, student_tokenizer) -> ModelFacts:
    """What a method is made with: the vocabulary the losses compare (the tokenizer's) and whether a teacher is given.

    With ``teacher.extra_paths`` it also says, per teacher, whether its
    tokenizer is the student's (the teachers' tokenizers are read for that).
    """
    shares: tuple[bool, ...] = ()
    if config.teacher.path and extra_teacher_paths(config):
        tokenizer_paths = [config.teacher.tokenizer or config.teacher.path]
        tokenizer_paths += [tokenizer for _, tokenizer in extra_teacher_paths(config)]
        shares = tuple(same_vocabulary(student_tokenizer, load_tokenizer(p, "teacher")) for p in tokenizer_paths)
    return ModelFacts(vocab_size=len(student_tokenizer), teacher_checkpoint=bool(config.teacher.path),
                      teachers_share_vocabulary=shares)


def _load_teacher(config: ml_collections.ConfigDict, path: str, mesh, what: str, dtype: str):
    teacher = models.load_pretrained(
        path,
        dtype=dtype,
        compute_dtype=config.teacher.compute_dtype,
        mesh=mesh,
        attention_impl=config.teacher.attention,
    )
    bad = run_health.nonfinite_params(nnx.state(teacher))
    if bad:
        console.warn(
            f"The {what} ({path}, as {config.teacher.param_dtype}) has non-finite weights: "
            f"{run_health.describe(bad)}. Steps whose teacher outputs they reach are skipped "
            "(train.max_bad_steps, train.max_bad_fraction); use teacher.param_dtype=float32 if they come "
            "from the conversion."
        )
    return teacher


def lora_spec(config: ml_collections.ConfigDict, model: str) -> model_lora.LoraSpec | None:
    """The LoRA of ``model`` ('student' or 'teacher') as ``<model>.lora`` says; ``None`` for rank 0 (no LoRA).

    A student's adapters are in ``student.param_dtype``; a trained teacher's in float32.
    """
    group = config[model].lora
    rank = group.rank
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ConfigError(f"{model}.lora.rank must be an integer >= 0 (0 = no LoRA); got {rank!r}.")
    if rank == 0:
        return None
    dtype = str(config.student.param_dtype) if model == "student" else "float32"
    try:
        return model_lora.LoraSpec(
            rank=rank, alpha=group.alpha, dropout=group.dropout, targets=model_lora.parse_targets(group.targets),
            dtype=dtype, where=f"{model}.lora",
        )
    except model_lora.LoraError as error:
        raise ConfigError(str(error)) from None


def base_dtype(config: ml_collections.ConfigDict, model: str) -> str:
    """The dtype ``model``'s weights load in: ``<model>.lora.base_dtype`` for a LoRA base, else ``param_dtype``."""
    if lora_spec(config, model) is not None and config[model].lora.base_dtype:
        return str(config[model].lora.base_dtype)
    return str(config[model].param_dtype)


def attach_lora(model, spec: model_lora.LoraSpec, mesh, seed: int, what: str) -> None:
    """Attaches fresh adapters (``B = 0``) to ``model`` and places them on ``mesh``; logs their size."""
    try:
        model_lora.apply_lora(model, spec, jax.random.key(seed))
    except model_lora.LoraError as error:
        raise ConfigError(str(error)) from None
    if mesh is not None:
        models.shard_model(model, mesh)
    counts = model_lora.adapter_summary(model)
    console.info(f"LoRA on the {what}: rank {spec.rank}, alpha {spec.alpha:g}, dropout {spec.dropout:g}, "
                 f"{counts['layers']} layer groups, {counts['adapter parameters']:,} trained parameters over a "
                 f"frozen base of {counts['base parameters']:,}")


def load_models(config: ml_collections.ConfigDict, method: Method, mesh, student_tokenizer=None) -> Models:
    student_tok = student_tokenizer or load_student_tokenizer(config)
    source = teacher_source(method)
    teacher_lora = lora_spec(config, "teacher")
    if teacher_lora is not None and not source.trained:
        raise ConfigError(
            f"teacher.lora.rank={teacher_lora.rank} applies to a teacher trained in the step (a method with teacher_mode 'trained', online distillation); "
            f"method '{method.name}' does not train its teacher. Set teacher.lora.rank=0."
        )
    student = models.load_pretrained(
        config.student.path,
        dtype=base_dtype(config, "student"),
        compute_dtype=config.student.compute_dtype,
        mesh=mesh,
        remat=config.student.remat,
        attention_impl=config.student.attention,
    )
    run_health.check_finite_weights(
        nnx.state(student), f"The student ({config.student.path}, as {config.student.param_dtype})",
        "Such values never become finite again in training, and the export would be refused: repair or "
        "re-download the checkpoint (or use a wider student.param_dtype if they come from the conversion).",
    )
    student_lora = lora_spec(config, "student")
    if student_lora is not None:
        attach_lora(student, student_lora, mesh, int(config.train.seed) + 2, "student")
    teacher = teacher_tok = None
    extra, extra_toks = [], []
    if source.loads_checkpoint:
        extra_paths = extra_teacher_paths(config)
        if extra_paths and not method.teacher_list:
            raise ConfigError(
                f"teacher.extra_paths names {len(extra_paths)} more teacher(s), but method '{method.name}' takes "
                "one teacher: leave teacher.extra_paths empty, or use a method that combines several teachers."
            )
        teacher_tok = load_tokenizer(config.teacher.tokenizer or config.teacher.path, "teacher")
        teacher = _load_teacher(config, config.teacher.path, mesh, "teacher", base_dtype(config, "teacher"))
        if teacher_lora is not None:
            attach_lora(teacher, teacher_lora, mesh, int(config.train.seed) + 3, "teacher")
        for index, (path, tokenizer_path) in enumerate(extra_paths, 1):
            extra_toks.append(load_tokenizer(tokenizer_path, "teacher"))
            extra.append(_load_teacher(config, path, mesh, f"teacher {index} (teacher.extra_paths)",
                                       str(config.teacher.param_dtype)))
        if method.teacher_list:
            check_teacher_vocabularies(method, student, (teacher, *extra), student_tok, (teacher_tok, *extra_toks))
        else:
            check_vocabularies(config, method, student, teacher, student_tok, teacher_tok)
    return Models(student, teacher, student_tok, teacher_tok, tuple(extra), tuple(extra_toks))


def data_teacher_tokenizer(models_: Models):
    """The tokenizer of the batch's ``teacher_*`` arrays: the first teacher's whose vocabulary is not the
    student's, else the first teacher's (``None`` without a teacher)."""
    for tokenizer in models_.teacher_tokenizers:
        if not same_vocabulary(models_.student_tokenizer, tokenizer):
            return tokenizer
    return models_.teacher_tokenizer


def teacher_prefixes(method: Method, models_: Models) -> tuple[str, ...]:
    """Per loaded teacher, the prefix of the batch arrays its forward reads: ``'teacher_'`` or ``''``.

    Without a cross-vocabulary method every teacher reads the student's arrays;
    with one, a single teacher reads the ``teacher_*`` arrays (as always), and of
    several, those with the vocabulary of :func:`data_teacher_tokenizer`.
    """
    tokenizers = models_.teacher_tokenizers
    if not method.cross_vocabulary:
        return ("",) * len(tokenizers)
    if len(tokenizers) == 1:
        return ("teacher_",)
    data_tok = data_teacher_tokenizer(models_)
    return tuple("teacher_" if same_vocabulary(data_tok, tok) else "" for tok in tokenizers)


def check_teacher_vocabularies(method: Method, student, teachers, student_tok, teacher_toks) -> None:
    """Several teachers: at most one vocabulary other than the student's; the others' heads cover the tokenizer."""
    foreign = [(k, tok) for k, tok in enumerate(teacher_toks) if not same_vocabulary(student_tok, tok)]
    if foreign and not method.cross_vocabulary:
        raise ConfigError(
            f"Teacher {foreign[0][0]}'s tokenizer ({len(foreign[0][1])} tokens) is not the student's "
            f"({len(student_tok)}), but method '{method.name}' was made for one shared tokenizer."
        )
    if any(not same_vocabulary(foreign[0][1], tok) for _, tok in foreign[1:]):
        raise ConfigError(
            "The teachers whose tokenizer is not the student's must share one tokenizer (the data is tokenized "
            f"once more, for one other vocabulary); teachers {[k for k, _ in foreign]} (teacher.path = 0, then "
            "teacher.extra_paths) use different ones."
        )
    shared = len(student_tok)
    for k, (teacher, tok) in enumerate(zip(teachers, teacher_toks)):
        if same_vocabulary(student_tok, tok) and shared > min(student.config.vocab_size, teacher.config.vocab_size):
            raise ConfigError(
                f"The tokenizer has {shared} tokens but the LM heads have {student.config.vocab_size} (student) and "
                f"{teacher.config.vocab_size} (teacher {k}) rows."
            )


def check_vocabularies(config, method: Method, student, teacher, student_tok, teacher_tok) -> None:
    """Same-vocabulary methods need one tokenizer; padded heads are compared over the shared rows."""
    if method.cross_vocabulary:
        return
    if not same_vocabulary(student_tok, teacher_tok):
        raise ConfigError(
            f"Teacher and student tokenizers differ ({len(teacher_tok)} vs {len(student_tok)} tokens), but "
            f"method '{method.name}' compares their distributions token by token. Use a cross-vocabulary "
            f"method ({', '.join(f'configs/{name}.py' for name in cross_vocabulary_methods())}), or give both "
            "models the same tokenizer."
        )
    shared = len(student_tok)
    v_student, v_teacher = student.config.vocab_size, teacher.config.vocab_size
    if shared > min(v_student, v_teacher):
        raise ConfigError(
            f"The tokenizer has {shared} tokens but the LM heads have {v_student} (student) and "
            f"{v_teacher} (teacher) rows."
        )
    if v_student != v_teacher:
        console.info(
            f"Teacher and student LM heads are padded differently ({v_teacher} vs {v_student} rows); "
            f"distilling over the {shared} rows of the shared vocabulary."
        )


@dataclasses.dataclass
class Data:
    train: data_lib.BatchSource
    eval_examples: list
    collate_kwargs: dict
    report: dict
    lm: LMWindows | None = None  # unlabelled text windows for the LM term (data.lm_files)


def _buckets(spec: str, max_len: int):
    if not spec:
        return data_lib.default_buckets(max_len)
    sizes = sorted({int(s) for s in spec.split(",") if s.strip()})
    if not sizes or sizes[-1] < max_len:
        raise ConfigError(f"data.buckets must reach data.max_len ({max_len}); got {sizes}.")
    return tuple(sizes)


def data_spec(config: ml_collections.ConfigDict) -> DataSpec:
    """The training records as the config names them (a method's ``prepare`` may return another spec)."""
    return DataSpec(str(config.data.train_files), str(config.data.format), str(config.data.prompt_template))


def packing_enabled(config: ml_collections.ConfigDict, method: Method) -> bool:
    """Whether training batches are packed (``data.packing``): 'auto' packs when the method allows it."""
    mode = str(config.data.get("packing", "auto"))
    if mode == "on" and not method.packable:
        raise ConfigError(
            f"data.packing='on' but method {method.name!r} cannot be packed: its loss needs one example per row "
            "(per-example pooling or normalisation, a second tokenization, or its own on-policy data). "
            "Use data.packing='auto' or 'off'."
        )
    return mode != "off" and method.packable


def build_data(config: ml_collections.ConfigDict, method: Method, models_: Models, workdir: str = "",
               spec: DataSpec | None = None, row_multiple: int = 1) -> Data:
    """Tokenized train and eval data and the train batch source.

    ``row_multiple``: packed train batches have a multiple of this many rows
    (gradient accumulation times the mesh's data-parallel shards).
    """
    dc = config.data
    spec = spec or data_spec(config)

    def convert(records, fmt, template, prompts_only=False):
        return data_lib.to_text_examples(
            records, fmt=fmt, tokenizer=models_.student_tokenizer, prompt_template=template or None,
            on_bad_record=dc.on_bad_record, allow_empty_response=prompts_only,
        )

    def read(files, split):
        unreadable = data_lib.SkipReport()  # malformed lines, with on_bad_record=skip
        records = data_lib.load_records(files, split=split, on_bad_record=dc.on_bad_record, skips=unreadable)
        return records, unreadable

    train_records, skips = read(spec.train_files, "train")
    train_text, convert_skips = convert(train_records, spec.format, spec.prompt_template, method.prompts_only)
    skips.merge(convert_skips)
    train_skips = data_lib.SkipReport()
    train_skips.merge(skips)
    eval_skips = data_lib.SkipReport()
    if dc.eval_files:
        eval_records, eval_skips = read(dc.eval_files, "validation")
        eval_text, more = convert(eval_records, dc.format, dc.prompt_template)
        eval_skips.merge(more)
        skips.merge(eval_skips)
    else:
        held_out = max(1, int(round(len(train_text) * dc.eval_fraction)))
        if held_out >= len(train_text):
            raise ConfigError("Too few records to hold out an evaluation split; set data.eval_files.")
        eval_text, train_text = train_text[-held_out:], train_text[:-held_out]
    eval_text = eval_text[: config.eval.max_examples]
    teacher_tok = data_teacher_tokenizer(models_) if method.cross_vocabulary else None
    tokenize = dict(
        max_len=dc.max_len, max_prompt_len=dc.max_prompt_len, policy=dc.truncation, teacher_tokenizer=teacher_tok,
    )
    train_examples, train_stats = data_lib.tokenize_examples(train_text, models_.student_tokenizer, **tokenize)
    eval_examples, eval_stats = data_lib.tokenize_examples(eval_text, models_.student_tokenizer, **tokenize)
    if method.prepare_examples is not None:
        context = lambda split: DataContext(  # noqa: E731
            config, workdir, models_.student_tokenizer, data_teacher_tokenizer(models_), split
        )
        train_examples = method.prepare_examples(train_examples, context("train"))
        eval_examples = method.prepare_examples(eval_examples, context("eval"))
    train_skips.merge(train_stats.skips)
    eval_skips.merge(eval_stats.skips)
    check_usable(train_examples, len(train_examples) + train_skips.total, train_skips, "training",
                 need=config.train.batch_size, need_what=f"a batch of train.batch_size={config.train.batch_size}")
    check_usable(eval_examples, len(eval_examples) + eval_skips.total, eval_skips, "evaluation", need=1,
                 need_what="an evaluation")
    truncation_warnings = [
        f"{stats.truncated + stats.dropped} of {stats.examples} {split} records "
        f"({100 * (stats.truncated + stats.dropped) / stats.examples:.1f}%)"
        for split, stats in (("training", train_stats), ("evaluation", eval_stats))
        if warn_truncation(split, stats.truncated, stats.examples, dc, dropped=stats.dropped)
    ]
    buckets = _buckets(dc.buckets, dc.max_len)
    collate_kwargs = dict(
        buckets=buckets,
        pad_id=models_.student_tokenizer.pad_token_id,
        teacher_buckets=buckets if teacher_tok is not None else None,
        teacher_pad_id=teacher_tok.pad_token_id if teacher_tok is not None else None,
    )
    source = data_lib.BatchSource(
        train_examples, batch_size=config.train.batch_size, seed=config.train.seed,
        packed=packing_enabled(config, method), row_multiple=row_multiple, **collate_kwargs
    )
    for stats in (train_stats, eval_stats):
        skips.merge(stats.skips)
    report = {
        "train examples": len(train_examples),
        "eval examples": len(eval_examples),
        "truncated": train_stats.truncated + eval_stats.truncated,
        "skipped": skips.summary(),
        "unused per epoch (partial last batch)": source.examples_unused_per_epoch,
    }
    if source.steps_per_epoch:
        unpacked = source.padding_fraction(packed=False)
        report["padding (epoch 0)"] = (
            f"{100 * unpacked:.1f}% unpacked -> {100 * source.padding_fraction():.1f}% packed" if source.packed
            else f"{100 * unpacked:.1f}% (not packed)")
    if truncation_warnings:
        report["truncation warning"] = (
            f"{' and '.join(truncation_warnings)} cut or dropped to fit data.max_len={dc.max_len} / "
            f"data.max_prompt_len={dc.max_prompt_len}")
    lm = None
    if dc.lm_files:
        if float(dc.lm_coef) < 0:
            raise ConfigError(f"data.lm_coef must be >= 0, got {dc.lm_coef}.")
        lm = LMWindows.from_documents(
            read_documents(dc.lm_files), models_.student_tokenizer, max_len=int(dc.max_len),
            batch_size=config.train.batch_size, seed=config.train.seed,
        )
        report["LM windows (data.lm_files)"] = f"{len(lm.windows)} of {dc.max_len} tokens, lm_coef {dc.lm_coef}"
    return Data(source, eval_examples, collate_kwargs, report, lm)


def check_usable(examples, records: int, skips, split: str, *, need: int, need_what: str) -> None:
    """Stops the run before its first step when a split has too few usable examples, saying why."""
    if len(examples) >= need:
        return
    why = skips.summary() if skips.total else "no records were skipped"
    raise data_lib.DataError(
        f"Only {len(examples)} usable {split} examples (of {records} records) for {need_what}: {why}. Fix the data, "
        "or raise data.max_len / data.max_prompt_len, or use data.truncation=truncate when examples are too long."
    )


# Truncation (examples cut or dropped to fit) of more than this share of a split's records is a warning.
TRUNCATION_WARNING_SHARE = 0.05


def warn_truncation(split: str, truncated: int, total: int, data_config, *, dropped: int = 0) -> str | None:
    """A loud warning when truncation cut or dropped more than 5% of a split's ``total`` records; returns it.

    ``truncated``: examples kept but cut to ``data.max_len`` / ``data.max_prompt_len``;
    ``dropped``: examples left out because they do not fit (``data.truncation=drop``,
    or no room left for the response).
    """
    touched = truncated + dropped
    if not total or touched <= TRUNCATION_WARNING_SHARE * total:
        return None
    parts = []
    if truncated:
        parts.append(f"{truncated} cut to fit")
    if dropped:
        parts.append(f"{dropped} dropped")
    message = (
        f"truncation touched {touched} of {total} {split} records ({100 * touched / total:.1f}%: "
        f"{' and '.join(parts)}) at data.max_len={data_config.max_len} / "
        f"data.max_prompt_len={data_config.max_prompt_len} tokens. Raise --config.data.max_len / "
        "--config.data.max_prompt_len (or change --config.data.truncation, now "
        f"{data_config.truncation!r}) unless that is intended."
    )
    console.info("!" * 78)
    console.warn(message)
    console.info("!" * 78)
    return message


def total_steps(config: ml_collections.ConfigDict, source: data_lib.BatchSource) -> int:
    if config.train.steps:
        return int(config.train.steps)
    return int(config.train.epochs) * source.steps_per_epoch


def num_batch_shards(mesh) -> int:
    spec = models.batch_sharding(mesh).spec[0]
    names = spec if isinstance(spec, tuple) else (spec,)
    return math.prod(mesh.shape[n] for n in names if n is not None)


def maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
    """``jax.distributed.initialize`` for multi-process runs (before any other jax call)."""
    dc = config.distributed
    if not dc.enabled:
        return
    if dc.coordinator_address:
        jax.distributed.initialize(
            coordinator_address=dc.coordinator_address,
            num_processes=int(dc.num_processes),
            process_id=int(dc.process_id),
        )
    else:
        jax.distributed.initialize()  # Discovers the cluster (Cloud TPU, Slurm, Kubernetes).
