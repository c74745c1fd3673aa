"""Teacher data generation: prompts in, ``{prompt, response}`` JSONL out, resumable.

Steps: read and render the prompts (:mod:`jdistill.data.prompts`), drop those
already in the output file, tokenize (too-long prompts are counted skips),
answer them with the generation service (:func:`jdistill.sampling.stream_responses`:
length-sorted fixed-size batches, each padded to its bucket, stopping at the
teacher's stop tokens) and append each batch's records with one fsync-ed write
(:class:`jdistill.data.response_writer.ResponseWriter`).

With ``generation.num_topk_logprobs = k`` the generated ids and the teacher's
top-k log-probs per response token go to a top-k store
(:mod:`jdistill.data.topk_store`, ``output.topk_dir``) while the JSONL keeps the
text. The two stay consistent across crashes: the records of a shard are
appended to the JSONL only after the shard is committed, and on resuming a
committed shard whose records did not reach the JSONL is discarded (its prompts
are answered again).
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import time
import zlib

import jax
import ml_collections

from jdistill import models, sampling
from jdistill.data.prompts import PromptOptions, to_prompts
from jdistill.data import topk_store
from jdistill.data.records import DataError, SkipReport, load_records
from jdistill.data.response_writer import ResponseWriter, read_done_ids
from jdistill import console
from jdistill.teacher_data.batches import tokenize_prompts
from jdistill.teacher_data.records_out import response_record
from jdistill.teacher_data.teacher import TeacherConfigError, check_teacher_path, load_teacher, parse_id_list


@dataclasses.dataclass(frozen=True)
class GenerationSummary:
    """What a run did.

    Attributes:
        written: records appended by this run.
        already_done: prompts found answered in the output file.
        remaining: prompts left unanswered (``generation.max_batches``).
        skips: prompts left out, by reason.
        new_tokens: response tokens generated (stop tokens included).
        seconds: wall time of the generation loop.
    """

    written: int
    already_done: int
    remaining: int
    skips: SkipReport
    new_tokens: int
    seconds: float


def _none_if_empty(text: str) -> str | None:
    return text if text else None


def prompt_options(data: ml_collections.ConfigDict, output: ml_collections.ConfigDict) -> PromptOptions:
    return PromptOptions(
        fmt=data.format,
        prompt_field=data.prompt_field,
        id_field=data.id_field,
        prompt_template=_none_if_empty(data.prompt_template),
        cot_template=_none_if_empty(data.cot_template),
        keep_cot_in_prompt=bool(output.keep_cot_in_prompt),
        chat_template=data.chat_template,
    )


def _buckets(spec: str):
    return parse_id_list(spec) or "pow2"


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the settings that need no files; raises with the setting to change."""
    check_teacher_path(config.teacher.path)
    if not config.data.prompt_files:
        raise DataError("No prompts given: set --config.data.prompt_files=PATH[,PATH...] (json, jsonl or parquet).")
    if not config.output.path:
        raise DataError("No output file given: set --config.output.path=FILE.jsonl.")
    gen = config.generation
    if gen.batch_size < 1 or gen.max_new_tokens < 1 or config.data.max_prompt_len < 1:
        raise TeacherConfigError(
            "generation.batch_size, generation.max_new_tokens and data.max_prompt_len must be >= 1."
        )
    buckets = _buckets(gen.buckets)
    if buckets != "pow2" and max(buckets) < config.data.max_prompt_len:
        raise TeacherConfigError(
            f"The largest of generation.buckets ({max(buckets)}) is below data.max_prompt_len "
            f"({config.data.max_prompt_len}); add a bucket or lower max_prompt_len."
        )


def _check_positions(model_config, max_prompt_len: int, max_new_tokens: int) -> None:
    if model_config.position_embedding != "learned":
        return
    if max_prompt_len + max_new_tokens > model_config.max_position_embeddings:
        raise TeacherConfigError(
            f"data.max_prompt_len + generation.max_new_tokens = {max_prompt_len + max_new_tokens} "
            f"exceeds the teacher's {model_config.max_position_embeddings} learned positions."
        )


def batch_key(key, first_prompt_id: str):
    """A batch's PRNG key: ``key`` folded with a checksum of its first prompt's id.

    Stable across restarts (unlike the batch's index, which changes when a
    resumed run skips answered prompts).
    """
    return jax.random.fold_in(key, zlib.crc32(first_prompt_id.encode("utf-8")) & 0x7FFFFFFF)


def sampling_settings(gen: ml_collections.ConfigDict) -> sampling.SamplingSettings:
    """The sampling settings of ``config.generation``."""
    return sampling.SamplingSettings(
        max_new_tokens=int(gen.max_new_tokens), temperature=float(gen.temperature), top_p=float(gen.top_p),
        top_k=int(gen.top_k), min_p=float(gen.min_p),
    )


def topk_dir(output: ml_collections.ConfigDict) -> str:
    """Where the top-k rows go: ``output.topk_dir``, else beside ``output.path`` (``x.jsonl`` → ``x.topk``)."""
    return output.topk_dir or topk_store.beside(output.path)


def _open_topk_store(config, tokenizer, writer: ResponseWriter, vocab_rows: int) -> topk_store.TopKWriter:
    """The store of a run with top-k log-probs, made consistent with the JSONL's records."""
    output = config.output
    prompts_differ = bool(config.data.cot_template) and not bool(output.keep_cot_in_prompt)
    store = topk_store.TopKWriter(
        topk_dir(output), k=int(config.generation.num_topk_logprobs), vocab_size=len(tokenizer),
        tokenizer=topk_store.tokenizer_fingerprint(tokenizer), source="generated", id_limit=vocab_rows,
        logprobs_dtype=str(output.topk_logprobs_dtype), shard_tokens=sys.maxsize,
        info={"records": output.path, "teacher": config.teacher.path, "prompt_differs": prompts_differ},
        keep_ids=writer.done_ids,
    )
    if store.discarded:
        console.info(f"removed unfinished or unrecorded shards of {topk_dir(output)}: {store.discarded}")
    missing = writer.done_ids - store.done_ids
    if missing:
        raise DataError(
            f"{output.path} holds {len(missing)} records (e.g. {sorted(missing)[0]!r}) whose top-k rows are not in "
            f"{topk_dir(output)}; it was written without top-k or by an older jdistill. Write to a new output.path."
        )
    return store


def run(config: ml_collections.ConfigDict) -> GenerationSummary:
    """Answers every prompt of ``config.data`` not yet in ``config.output.path``."""
    validate(config)
    gen = config.generation
    mesh = models.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if gen.batch_size % batch_shards:
        raise TeacherConfigError(
            f"generation.batch_size ({gen.batch_size}) must be a multiple of the {batch_shards} "
            "batch shards of the mesh (mesh.data x mesh.fsdp)."
        )
    model, tokenizer = load_teacher(config.teacher, mesh)
    _check_positions(model.config, config.data.max_prompt_len, gen.max_new_tokens)
    stop = sampling.stop_tokens(
        tokenizer, config.teacher.path, model.config, parse_id_list(gen.eos_ids), setting="generation.eos_ids"
    )

    prompts, skips = to_prompts(
        load_records(config.data.prompt_files), tokenizer, prompt_options(config.data, config.output)
    )
    if config.data.max_prompts:
        prompts = prompts[: config.data.max_prompts]
    # Every process generates (the batch is sharded over all of them); process
    # 0 alone writes. The others read the answered ids before the first batch,
    # which process 0 cannot write until every process has joined it.
    writer = ResponseWriter(config.output.path) if jax.process_index() == 0 else None
    done_ids = read_done_ids(config.output.path) if writer is None else writer.done_ids
    if writer is not None and writer.truncated_bytes:
        console.info(
            f"removed a partial last line ({writer.truncated_bytes} bytes) of {config.output.path}: "
            "its batch is generated again"
        )
    store = None
    if gen.num_topk_logprobs and writer is not None:
        store = _open_topk_store(config, tokenizer, writer, model.config.vocab_size)
    todo = [p for p in prompts if p.id not in done_ids]
    already_done = len(prompts) - len(todo)
    items = tokenize_prompts(todo, tokenizer, max_prompt_len=config.data.max_prompt_len, skips=skips)
    num_batches = -(-len(items) // gen.batch_size)
    if gen.max_batches:
        num_batches = min(num_batches, int(gen.max_batches))
    console.info(
        f"{len(prompts)} prompts: {already_done} already answered in {config.output.path}, "
        f"{len(items)} to answer in {num_batches} batches; {skips.summary()}; eos ids {list(stop.eos_ids)}"
    )

    from tqdm import tqdm  # Imported late: only runs with a progress bar need it.

    key = jax.random.key(gen.seed)
    stream = sampling.stream_responses(
        model,
        [item.ids for item in items],
        sampling_settings(gen),
        stop,
        batch_size=gen.batch_size,
        batch_key=lambda rows: batch_key(key, items[rows[0]].prompt.id),
        mesh=mesh,
        buckets=_buckets(gen.buckets),
        num_topk_logprobs=gen.num_topk_logprobs,
    )
    written = new_tokens = 0
    start = time.perf_counter()
    bar = tqdm(
        total=min(len(items), num_batches * gen.batch_size),
        unit="prompt",
        desc="generate",
        dynamic_ncols=True,
        disable=writer is None,
    )
    pending: list[dict] = []  # records waiting for their top-k shard to be committed

    def flush() -> int:
        if store is not None:
            store.commit()
        count = writer.write(pending) if writer is not None else len(pending)
        pending.clear()
        return count

    try:
        for batch in itertools.islice(stream, num_batches):
            records = [response_record(items[i], r, tokenizer) for i, r in zip(batch.rows, batch.responses)]
            if store is not None:
                for i, response in zip(batch.rows, batch.responses):
                    prompt_ids = items[i].ids
                    store.add(items[i].prompt.id, sequence=list(prompt_ids) + response.ids.tolist(),
                              spans=[(len(prompt_ids), len(prompt_ids) + len(response.ids))],
                              ids=response.topk_ids, logprobs=response.topk_logprobs, ended=response.ended)
            pending.extend(records)
            if store is None or store.pending_rows >= int(config.output.topk_shard_tokens):
                written += flush()
            new_tokens += batch.new_tokens
            bar.update(len(batch.rows))
            bar.set_postfix(tok_s=f"{new_tokens / max(time.perf_counter() - start, 1e-9):.0f}")
    finally:
        bar.close()
        written += flush()  # whole batches only: a failed batch never reached `pending`
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - start
    remaining = len(items) - written
    console.info(
        f"wrote {written} responses ({new_tokens} tokens, {new_tokens / max(seconds, 1e-9):.0f} tokens/s) "
        f"to {config.output.path}; {remaining} left for a later run; {skips.summary()}"
    )
    if store is not None:
        console.info(f"top-k store {topk_dir(config.output)}: {topk_store.TopKStore(topk_dir(config.output)).summary()}")
    return GenerationSummary(written, already_done, remaining, skips, new_tokens, seconds)
