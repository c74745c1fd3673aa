"""``generate``: the public entry point of the sampler."""

from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jdistill.models.dtypes import canonical_dtype_name
from jdistill.models.sharding import BATCH_AXES, batch_sharding, state_shardings
from jdistill.padding import bucket_length, repad_left
from jdistill.sampling.decode import decode
from jdistill.sampling.filters import FilterFlags
from jdistill.sampling.output import GenerationOutput
from jdistill.sampling.step import SamplingParams
from jdistill.sampling.stop_policy import token_ids


# EOS ids are passed as a fixed-size array of this many slots (or a multiple).
EOS_SLOTS = 8


def padded_eos_array(eos_ids: Sequence[int]) -> np.ndarray:
    """EOS ids padded with -1 (never a token) to a multiple of :data:`EOS_SLOTS`.

    The array's shape is part of the compiled program; padding keeps one, two
    or three EOS ids (or none) on the same program.
    """
    slots = EOS_SLOTS * max(1, -(-len(eos_ids) // EOS_SLOTS))
    array = np.full((slots,), -1, np.int32)
    array[: len(eos_ids)] = eos_ids
    return array


def _host_array(array, dtype) -> np.ndarray:
    if isinstance(array, jax.Array) and not array.is_fully_addressable:
        raise ValueError(
            "prompts spread over several processes must already have a bucket width; "
            "pass prompt_buckets=None"
        )
    return np.asarray(array, dtype)


def _prepare_prompts(prompt_ids, prompt_mask, prompt_buckets, pad_id):
    if prompt_mask is None:
        prompt_mask = np.ones(np.shape(prompt_ids), bool)
    if np.ndim(prompt_ids) != 2 or np.shape(prompt_ids) != np.shape(prompt_mask):
        raise ValueError(
            f"prompt_ids {np.shape(prompt_ids)} and prompt_mask {np.shape(prompt_mask)} "
            "must both be [B, T]"
        )
    width = np.shape(prompt_ids)[1]
    padded_width = bucket_length(width, prompt_buckets)
    if padded_width == width and isinstance(prompt_ids, jax.Array):
        return prompt_ids.astype(np.int32), prompt_mask.astype(bool)
    ids_BxT = _host_array(prompt_ids, np.int32)
    mask_BxT = _host_array(prompt_mask, bool)
    return repad_left(ids_BxT, mask_BxT, padded_width, pad_id)


def _check_batch_divides(batch: int, mesh: Mesh) -> None:
    shards = 1
    for axis in BATCH_AXES:
        shards *= mesh.shape.get(axis, 1)
    if batch % shards:
        raise ValueError(
            f"batch size {batch} is not divisible by the {shards} batch shards of the mesh "
            f"(axes {BATCH_AXES}); pad the batch (jdistill.padding.fill_batch)"
        )


def generate(
    model,
    prompt_ids,
    prompt_mask=None,
    *,
    key=None,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    eos_ids: int | Sequence[int] | None = None,
    pad_id: int | None = None,
    num_topk_logprobs: int = 0,
    prompt_buckets: Sequence[int] | str | None = "pow2",
    cache_dtype=None,
    mesh: Mesh | None = None,
    unstack_layers: bool | None = None,
) -> GenerationOutput:
    """Samples up to ``max_new_tokens`` tokens after each prompt.

    Runs one jitted program (prefill + ``lax.while_loop`` decode over a
    preallocated KV cache) that stops as soon as every row has ended. The
    program is cached per (model structure, prompt bucket, batch size,
    ``max_new_tokens``, which filters are on, ``num_topk_logprobs``, cache
    dtype, mesh): numeric settings and new weights reuse it.

    Args:
        model: a ``jdistill.models.Decoder`` (any module with the same call
            signature, ``init_cache``, ``lm_head_weight`` and ``config``).
        prompt_ids: ``[B, T]`` int prompt ids, usually left-padded (any
            padding works: the first token is predicted from each row's last
            real token).
        prompt_mask: ``[B, T]``, True/1 on real prompt tokens; ``None`` means
            no padding.
        key: a ``jax.random.key``; required unless ``temperature == 0``. The
            same key, prompts and settings give the same tokens.
        max_new_tokens: ``N``, the width of every returned array.
        temperature: 0 means greedy (argmax; the filters are ignored).
        top_k: keep the ``top_k`` most likely tokens; 0 disables.
        top_p: nucleus sampling; 1 disables.
        min_p: drop tokens below ``min_p`` times the top probability; 0
            disables.
        eos_ids: end-of-sequence id(s); ``None`` uses the model config's
            ``eos_token_id``; ``()`` disables EOS (always ``N`` tokens).
            (:func:`jdistill.sampling.stop_tokens` is the full policy:
            tokenizer, ``generation_config.json`` and model config.)
        pad_id: id written after a row's EOS (and into bucket padding);
            ``None`` uses the config's ``pad_token_id``, else 0.
        num_topk_logprobs: also return the unfiltered model's top-``K`` ids
            and log-probs at every step (0: off).
        prompt_buckets: pad the prompt width to a bucket (``"pow2"``: the
            next power of two >= 16; a list of widths; ``None``: no padding)
            so that varying prompt lengths share compiled programs.
        cache_dtype: KV cache dtype; ``None`` uses the model's compute dtype.
        mesh: shard the batch over the mesh's ``data``/``fsdp`` axes and the
            model state with ``jdistill.models.sharding`` rules (a no-op for
            a model already placed by ``load_pretrained(mesh=...)``).
        unstack_layers: decode over per-layer weight copies made once per
            call (faster steps, one extra copy of the block weights in
            memory); ``None`` = on the CPU backend only.

    Returns:
        A :class:`GenerationOutput` of ``[B, N]`` arrays (``lengths`` is
        ``[B]``).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if num_topk_logprobs < 0 or num_topk_logprobs > model.config.vocab_size:
        raise ValueError(
            f"num_topk_logprobs must be in [0, vocab_size={model.config.vocab_size}], "
            f"got {num_topk_logprobs}"
        )
    flags = FilterFlags.from_settings(
        temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p
    )
    if key is None:
        if not flags.greedy:
            raise ValueError("sampling (temperature > 0) needs a PRNG key: key=jax.random.key(seed)")
        key = jax.random.key(0)
    if pad_id is None:
        pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    params = SamplingParams(
        temperature=np.float32(max(float(temperature), 1e-6)),
        top_p=np.float32(top_p),
        min_p=np.float32(min_p),
        eos_ids_E=padded_eos_array(token_ids(model.config.eos_token_id if eos_ids is None else eos_ids)),
        pad_id=np.int32(pad_id),
    )
    ids_BxT, mask_BxT = _prepare_prompts(prompt_ids, prompt_mask, prompt_buckets, pad_id)
    graphdef, state = nnx.split(model)
    if mesh is not None:
        _check_batch_divides(ids_BxT.shape[0], mesh)
        state = jax.device_put(state, state_shardings(state, mesh))
        ids_BxT = jax.device_put(ids_BxT, batch_sharding(mesh))
        mask_BxT = jax.device_put(mask_BxT, batch_sharding(mesh))
    return decode(
        graphdef,
        state,
        ids_BxT,
        mask_BxT,
        key,
        params,
        max_new_tokens=int(max_new_tokens),
        flags=flags,
        num_topk=int(num_topk_logprobs),
        cache_dtype=None if cache_dtype is None else canonical_dtype_name(cache_dtype),
        mesh=mesh,
        unstack_layers=jax.default_backend() == "cpu" if unstack_layers is None else bool(unstack_layers),
    )
