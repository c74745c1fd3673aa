"""Teacher data generation: prompts in, ``{prompt, response}`` JSONL out, resumable.

Steps: read and render the prompts (:mod:`jdistill.data.prompts`), drop those
already in the output file, tokenize (too-long prompts are counted skips),
group into fixed-size batches per prompt bucket, sample each batch with
:func:`jdistill.sampling.generate` and append its records with one fsync-ed
write (:class:`jdistill.data.response_writer.ResponseWriter`).
"""

from __future__ import annotations

import dataclasses
import time
import zlib

import jax
import ml_collections
import numpy as np

from jdistill import models, sampling
from jdistill.data.prompts import PromptOptions, to_prompts
from jdistill.data.records import DataError, SkipReport, load_records
from jdistill.data.response_writer import ResponseWriter, read_done_ids
from jdistill import console
from jdistill.teacher_data.batches import plan_batches, tokenize_prompts
from jdistill.teacher_data.records_out import response_record
from jdistill.teacher_data.teacher import (
    TeacherConfigError,
    check_teacher_path,
    load_teacher,
    parse_id_list,
    resolve_eos_ids,
)


@dataclasses.dataclass(frozen=True)
class GenerationSummary:
    """What a run did.

    Attributes:
        written: records appended by this run.
        already_done: prompts found answered in the output file.
        remaining: prompts left unanswered (``generation.max_batches``).
        skips: prompts left out, by reason.
        new_tokens: response tokens generated (EOS included).
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


def batch_key(key, batch):
    """The batch's PRNG key: ``key`` folded with a checksum of its first prompt id.

    Stable across restarts (unlike the batch's index, which changes when a
    resumed run skips answered prompts).
    """
    return jax.random.fold_in(key, zlib.crc32(batch.items[0].prompt.id.encode("utf-8")) & 0x7FFFFFFF)


def _to_host(array) -> np.ndarray:
    """An output array's full value on this process (gathered across processes if needed)."""
    if getattr(array, "is_fully_addressable", True):
        return np.asarray(jax.device_get(array))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


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
    eos_ids = resolve_eos_ids(gen.eos_ids, tokenizer, config.teacher.path, model.config)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]

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
    todo = [p for p in prompts if p.id not in done_ids]
    already_done = len(prompts) - len(todo)
    items = tokenize_prompts(todo, tokenizer, max_prompt_len=config.data.max_prompt_len, skips=skips)
    batches = plan_batches(items, batch_size=gen.batch_size, buckets=_buckets(gen.buckets), pad_id=pad_id)
    if gen.max_batches:
        batches = batches[: gen.max_batches]
    console.info(
        f"{len(prompts)} prompts: {already_done} already answered in {config.output.path}, "
        f"{len(items)} to answer in {len(batches)} batches; {skips.summary()}; eos ids {list(eos_ids)}"
    )

    from tqdm import tqdm  # Imported late: only runs with a progress bar need it.

    key = jax.random.key(gen.seed)
    written = new_tokens = 0
    start = time.perf_counter()
    bar = tqdm(
        total=sum(len(b.items) for b in batches),
        unit="prompt",
        desc="generate",
        dynamic_ncols=True,
        disable=writer is None,
    )
    try:
        for batch in batches:
            out = sampling.generate(
                model,
                batch.ids_BxT,
                batch.mask_BxT,
                key=batch_key(key, batch),
                max_new_tokens=gen.max_new_tokens,
                temperature=gen.temperature,
                top_k=gen.top_k,
                top_p=gen.top_p,
                min_p=gen.min_p,
                eos_ids=eos_ids,
                pad_id=pad_id,
                num_topk_logprobs=gen.num_topk_logprobs,
                prompt_buckets=None,
                mesh=mesh,
            )
            host = {
                field.name: _to_host(getattr(out, field.name))
                for field in dataclasses.fields(out)
                if getattr(out, field.name) is not None
            }
            topk_ids, topk_logprobs = host.get("topk_ids"), host.get("topk_logprobs")
            records = [
                response_record(
                    item,
                    host["tokens"][row],
                    host["mask"][row],
                    eos_ids,
                    tokenizer,
                    None if topk_ids is None else topk_ids[row],
                    None if topk_logprobs is None else topk_logprobs[row],
                )
                for row, item in enumerate(batch.items)
            ]
            written += len(records) if writer is None else writer.write(records)
            new_tokens += int(host["lengths"][: len(batch.items)].sum())
            bar.update(len(batch.items))
            bar.set_postfix(tok_s=f"{new_tokens / max(time.perf_counter() - start, 1e-9):.0f}")
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - start
    remaining = len(items) - written
    console.info(
        f"wrote {written} responses ({new_tokens} tokens, {new_tokens / max(seconds, 1e-9):.0f} tokens/s) "
        f"to {config.output.path}; {remaining} left for a later run; {skips.summary()}"
    )
    return GenerationSummary(written, already_done, remaining, skips, new_tokens, seconds)
