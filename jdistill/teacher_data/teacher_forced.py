"""The teacher-forced pass: a dataset's own responses in, the teacher's top-k per trained token out.

``python -m jdistill.teacher_logits --config=<training config>`` (or sparse
KD's ``prepare`` hook with ``method.teacher_data.source='dataset'``) runs the
teacher once over the training records and writes a top-k store
(:mod:`jdistill.data.topk_store`) that training then reads without the teacher.

1. **The training tokenization.** The records of ``data.train_files`` are read
   and tokenized exactly as training does (``data.format``, ``prompt_template``,
   ``max_len``, ``max_prompt_len``, ``truncation``, ``on_bad_record``; chat
   records with the chat template, every assistant turn), with the student's
   tokenizer, which must be the teacher's vocabulary. Training checks each
   example's tokens against the store's, so a change of those settings is an
   error, never a silent mismatch.
2. **The teacher forward.** Examples not yet in the store are sorted by length
   into batches of ``batch_size`` rows (the last filled with empty rows), each
   right-padded to its bucket (``data.buckets``; one compiled program per
   bucket), sharded over the mesh's batch axes; the jitted forward computes the
   LM head chunk by chunk along the sequence (``logits_memory_mb`` bounds a
   chunk's ``[B, c, V]`` float32 logits), takes ``log_softmax`` over the
   tokenizer's rows (as the online losses compare them) and its top ``k``.
3. **The store.** Each example's rows at its trained positions are appended;
   shards are committed as they fill, so a rerun skips what is written and a
   crash loses at most the pending shard. A progress bar counts examples and
   tokens per second; the summary reports the store's bytes per token.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jdistill import console, models
from jdistill.data import topk_store
from jdistill.data.batching import collate, default_buckets
from jdistill.data.records import DataError, SkipReport, load_records, to_text_examples
from jdistill.data.tokenize import TokenizedExample, tokenize_examples
from jdistill.sampling.responses import host_arrays
from jdistill.teacher_data.teacher import TeacherConfigError, check_teacher_path, load_tokenizer


@dataclasses.dataclass(frozen=True)
class ForcedSettings:
    """How the pass runs (sparse KD's ``method.teacher_data`` group names them).

    Attributes:
      out_dir: the store directory.
      k: top-k ids per token.
      batch_size: examples per forward (a multiple of the mesh's batch shards).
      logprobs_dtype: ``'float16'`` or ``'float32'``.
      shard_tokens: rows per store shard.
      logits_memory_mb: bound on one chunk's float32 logits (the LM head runs chunk by chunk).
      progress_bar: show a progress bar (process 0).
    """

    out_dir: str
    k: int = 16
    batch_size: int = 8
    logprobs_dtype: str = "float16"
    shard_tokens: int = topk_store.DEFAULT_SHARD_TOKENS
    logits_memory_mb: int = 1024
    progress_bar: bool = True


@dataclasses.dataclass(frozen=True)
class ForcedSummary:
    """What a pass did: examples written now / found written, tokens written, skipped records, the store."""

    written: int
    already_done: int
    tokens: int
    skips: SkipReport
    seconds: float
    directory: str
    bytes_per_token: float | None


def tokenizer_path(config: ml_collections.ConfigDict) -> str:
    """The tokenizer training reads (the student's), else the teacher's."""
    return config.student.tokenizer or config.student.path or config.teacher.tokenizer or config.teacher.path


def parse_buckets(spec: str, max_len: int) -> tuple[int, ...]:
    if not spec:
        return default_buckets(max_len)
    sizes = sorted({int(s) for s in str(spec).split(",") if s.strip()})
    if not sizes or sizes[-1] < max_len:
        raise DataError(f"data.buckets must reach data.max_len ({max_len}); got {sizes}.")
    return tuple(sizes)


def training_examples(config: ml_collections.ConfigDict, tokenizer) -> tuple[list[TokenizedExample], SkipReport]:
    """``data.train_files`` tokenized with the training data settings (what the training run will read)."""
    dc = config.data
    skips = SkipReport()  # malformed lines, with on_bad_record=skip
    records = load_records(dc.train_files, on_bad_record=dc.on_bad_record, skips=skips)
    text, convert_skips = to_text_examples(
        records, fmt=dc.format, tokenizer=tokenizer, prompt_template=dc.prompt_template or None,
        on_bad_record=dc.on_bad_record,
    )
    skips.merge(convert_skips)
    examples, stats = tokenize_examples(
        text, tokenizer, max_len=int(dc.max_len), max_prompt_len=int(dc.max_prompt_len), policy=dc.truncation
    )
    skips.merge(stats.skips)
    return examples, skips


def data_info(config: ml_collections.ConfigDict) -> dict:
    """The data settings a store is written with (kept in its manifest, quoted in mismatch errors)."""
    dc = config.data
    return {"train_files": str(dc.train_files), "format": str(dc.format), "prompt_template": str(dc.prompt_template),
            "max_len": int(dc.max_len), "max_prompt_len": int(dc.max_prompt_len), "truncation": str(dc.truncation),
            "teacher": str(config.teacher.path)}


def _chunk_length(length: int, rows: int, vocab: int, memory_mb: int) -> int:
    """The largest divisor of ``length`` whose ``[rows, c, vocab]`` float32 logits fit ``memory_mb``."""
    limit = max(1, int(memory_mb) * 2**20 // max(1, 4 * rows * vocab))
    return max(c for c in range(1, length + 1) if length % c == 0 and c <= limit)


@functools.partial(jax.jit, static_argnames=("graphdef", "k", "vocab", "chunk"))
def _topk_logprobs(graphdef, state, ids_BxT, mask_BxT, *, k: int, vocab: int, chunk: int):
    """``(ids [B, T, k] int32, log-probs [B, T, k] float32)``: the top ``k`` of ``log_softmax`` over the first
    ``vocab`` rows of the teacher's next-token logits at every position."""
    model = nnx.merge(graphdef, state)
    hidden_BxTxd = model(ids_BxT, mask_BxT, return_logits=False).hidden_states
    batch, length, width = hidden_BxTxd.shape
    chunks_CxBxcxd = hidden_BxTxd.reshape(batch, length // chunk, chunk, width).swapaxes(0, 1)

    def one(hidden_Bxcxd):
        # The forward pass's own LM head (its final-logit soft-cap included), in float32.
        logits = model.logits_from_hidden(hidden_Bxcxd, dtype=jnp.float32)[..., :vocab]
        values, indices = jax.lax.top_k(jax.nn.log_softmax(logits, axis=-1), k)
        return indices.astype(jnp.int32), values

    ids_CxBxcxK, logprobs_CxBxcxK = jax.lax.map(one, chunks_CxBxcxd)
    unchunk = lambda x: x.swapaxes(0, 1).reshape(batch, length, k)  # noqa: E731
    return unchunk(ids_CxBxcxK), unchunk(logprobs_CxBxcxK)


def run(config: ml_collections.ConfigDict, settings: ForcedSettings) -> ForcedSummary:
    """Writes the teacher's top-k for every training example not yet in ``settings.out_dir``.

    ``config`` is a training config (``teacher``, ``student``, ``data``, ``mesh``).
    The teacher is loaded only when there is something to write.
    """
    check_teacher_path(config.teacher.path)
    if not config.data.train_files:
        raise DataError("No training records given: set --config.data.train_files=PATH[,PATH...].")
    if settings.k < 1 or settings.batch_size < 1:
        raise TeacherConfigError("The top-k size and the batch size of the teacher-forced pass must be >= 1.")
    tokenizer = load_tokenizer(tokenizer_path(config))
    teacher_tokenizer = load_tokenizer(config.teacher.tokenizer or config.teacher.path)
    if tokenizer.get_vocab() != teacher_tokenizer.get_vocab():
        raise DataError(
            f"The teacher's tokenizer ({len(teacher_tokenizer)} tokens) is not the student's ({len(tokenizer)}); "
            "stored top-k targets are compared token by token and need one vocabulary."
        )
    if settings.k > len(tokenizer):
        raise TeacherConfigError(f"top-k size {settings.k} exceeds the tokenizer's {len(tokenizer)} tokens.")
    start = time.perf_counter()
    examples, skips = training_examples(config, tokenizer)
    writer = None
    if jax.process_index() == 0:
        writer = topk_store.TopKWriter(
            settings.out_dir, k=settings.k, vocab_size=len(tokenizer),
            tokenizer=topk_store.tokenizer_fingerprint(tokenizer), source="teacher_forced",
            logprobs_dtype=settings.logprobs_dtype, shard_tokens=settings.shard_tokens, info=data_info(config),
        )
        done = writer.done_ids
        if writer.discarded:
            console.info(f"removed the files of an unfinished shard of {settings.out_dir}: {writer.discarded}")
    else:
        done = topk_store.TopKStore(settings.out_dir).ids() if _exists(settings.out_dir) else set()
    todo = [e for e in examples if e.id not in done]
    console.info(
        f"teacher-forced top-{settings.k}: {len(examples)} training examples, {len(examples) - len(todo)} already "
        f"in {settings.out_dir}, {len(todo)} to run; {skips.summary()}"
    )
    written = tokens = 0
    try:
        if todo:
            written, tokens = _forward_all(config, settings, tokenizer, todo, writer)
    finally:
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - start
    bytes_per_token = writer.manifest.get("bytes_per_token") if writer is not None else None
    if writer is not None:
        console.info(
            f"wrote {written} examples ({tokens} tokens) in {seconds:.1f}s; store {settings.out_dir}: "
            f"{topk_store.TopKStore(settings.out_dir).summary()}"
        )
    return ForcedSummary(written, len(examples) - len(todo), tokens, skips, seconds, settings.out_dir,
                         bytes_per_token)


def _exists(directory: str) -> bool:
    return os.path.exists(os.path.join(directory, topk_store.MANIFEST))


def _forward_all(config, settings: ForcedSettings, tokenizer, todo: list[TokenizedExample], writer) -> tuple[int, int]:
    from tqdm import tqdm  # Imported late: only runs with a progress bar need it.

    mesh = models.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if settings.batch_size % shards:
        raise TeacherConfigError(
            f"The teacher-forced batch size ({settings.batch_size}) must be a multiple of the {shards} batch shards "
            "of the mesh (mesh.data x mesh.fsdp); set method.teacher_data.batch_size."
        )
    model = models.load_pretrained(
        config.teacher.path, dtype=config.teacher.param_dtype, compute_dtype=config.teacher.compute_dtype, mesh=mesh,
        attention_impl=config.teacher.attention,
    )
    graphdef, state = nnx.split(model)
    vocab = len(tokenizer)
    if model.config.vocab_size < vocab:
        raise DataError(f"The teacher's LM head has {model.config.vocab_size} rows, its tokenizer {vocab} tokens.")
    buckets = parse_buckets(config.data.buckets, int(config.data.max_len))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(todo)), key=lambda i: len(todo[i].student.ids))
    written = tokens = 0
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="example", desc="teacher top-k", dynamic_ncols=True,
               disable=writer is None or not settings.progress_bar)
    try:
        for first in range(0, len(order), settings.batch_size):
            chunk = [todo[i] for i in order[first : first + settings.batch_size]]
            batch = collate(chunk + [None] * (settings.batch_size - len(chunk)), buckets=buckets, pad_id=pad_id)
            ids_BxT = jax.device_put(batch["input_ids"], models.batch_sharding(mesh))
            mask_BxT = jax.device_put(batch["attention_mask"], models.batch_sharding(mesh))
            length = ids_BxT.shape[1]
            rows_per_device = max(1, settings.batch_size // shards)
            step = _chunk_length(length, rows_per_device, vocab, settings.logits_memory_mb)
            top_ids, top_logprobs = host_arrays(
                _topk_logprobs(graphdef, state, ids_BxT, mask_BxT, k=settings.k, vocab=vocab, chunk=step)
            )
            for row, example in enumerate(chunk):
                spans = example.student.trained_spans
                positions = topk_store.positions_of(spans)
                if writer is not None:
                    writer.add(example.id, sequence=example.student.ids[: spans[-1][1]], spans=spans,
                               ids=top_ids[row, positions], logprobs=top_logprobs[row, positions])
                tokens += len(positions)
            written += len(chunk)
            bar.update(len(chunk))
            bar.set_postfix(tok_s=f"{tokens / max(time.perf_counter() - start, 1e-9):.0f}")
    finally:
        bar.close()
    return written, tokens
