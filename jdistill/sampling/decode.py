"""The jitted decode program: prefill, then a ``while_loop`` over a preallocated cache.

:func:`decode` is jitted once at module level. Its static arguments are the
model's ``graphdef`` and the settings that change the program's shape or
structure (``max_new_tokens``, the filter flags, the top-k-logprobs count, the
cache dtype, the mesh); the model *state*, the prompts, the key and the
numeric sampling settings are traced. So generating many batches of one shape
bucket, with a model whose weights change in between (a student in training),
compiles once.

Program, for prompts ``[B, T]`` and ``N = max_new_tokens``:

1. allocate a ``T + N - 1``-slot KV cache (sharded like
   ``jdistill.models.kv_cache_shardings`` on a mesh);
2. prefill: one forward pass over the prompts writes slots ``0..T-1``; the
   LM head runs only at each row's last real prompt token;
3. choose token 0; then ``while step < N and some row is still running``:
   feed the previous token (``T = 1``), choose the next one. A row that has
   emitted an EOS id feeds padding (marked invalid in the cache) and emits
   the pad id from then on. With ``unstack_layers`` the steps run the layers
   unrolled over per-layer weights sliced once before the loop (on CPU this
   saves copying all weights at every step, at the price of one extra copy of
   the block weights while generating).
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from jdistill.models.layers import soft_cap
from jdistill.models.sharding import batch_sharding, kv_cache_shardings
from jdistill.sampling.filters import FilterFlags
from jdistill.sampling.output import GenerationOutput
from jdistill.sampling.step import SamplingParams, StepChoice, choose_tokens


def next_token_logits(model, hidden_Bxd: jnp.ndarray) -> jnp.ndarray:
    """``[B, V]`` float32 logits of the LM head applied to ``hidden_Bxd``.

    Computes what the model's own head computes (compute-dtype operands,
    float32 accumulation, the final-logit soft-cap of Gemma 2/3) without
    rounding the result to the compute dtype.
    """
    dtype = model.config.dtype
    head_dxV = model.lm_head_weight().astype(dtype)
    logits_BxV = jnp.einsum(
        "bd,dv->bv", hidden_Bxd.astype(dtype), head_dxV, preferred_element_type=jnp.float32
    )
    return soft_cap(logits_BxV, getattr(model.config, "final_logit_softcap", None))


def last_real_index(mask_BxT: jnp.ndarray) -> jnp.ndarray:
    """``[B]`` column of each row's last True entry (``T - 1`` for an empty row)."""
    length = mask_BxT.shape[1]
    return length - 1 - jnp.argmax(mask_BxT[:, ::-1], axis=1).astype(jnp.int32)


def _is_eos(token_B: jnp.ndarray, eos_ids_E: jnp.ndarray) -> jnp.ndarray:
    return jnp.any(token_B[:, None] == eos_ids_E[None, :], axis=-1)


def _empty_output(batch: int, max_new_tokens: int, num_topk: int, pad_id) -> GenerationOutput:
    shape = (batch, max_new_tokens)
    topk_ids = topk_logprobs = None
    if num_topk:
        topk_ids = jnp.zeros((*shape, num_topk), jnp.int32)
        topk_logprobs = jnp.zeros((*shape, num_topk), jnp.float32)
    return GenerationOutput(
        tokens=jnp.full(shape, pad_id, jnp.int32),
        mask=jnp.zeros(shape, bool),
        lengths=jnp.zeros((batch,), jnp.int32),
        logprobs=jnp.zeros(shape, jnp.float32),
        sampling_logprobs=jnp.zeros(shape, jnp.float32),
        topk_ids=topk_ids,
        topk_logprobs=topk_logprobs,
    )


def _write_column(
    out: GenerationOutput, step, choice: StepChoice, active_B: jnp.ndarray, pad_id
) -> GenerationOutput:
    """Stores ``choice`` in column ``step`` for active rows (pad/zeros elsewhere)."""

    def put(array_BxN, value_B):
        return jax.lax.dynamic_update_index_in_dim(array_BxN, value_B, step, axis=1)

    def masked(value, fill):
        where_active = active_B.reshape(active_B.shape + (1,) * (value.ndim - 1))
        return jnp.where(where_active, value, fill)

    topk_ids, topk_logprobs = out.topk_ids, out.topk_logprobs
    if topk_ids is not None:
        topk_ids = put(topk_ids, masked(choice.topk_ids_BxK, 0))
        topk_logprobs = put(topk_logprobs, masked(choice.topk_logprobs_BxK, 0.0))
    return GenerationOutput(
        tokens=put(out.tokens, masked(choice.token_B, pad_id)),
        mask=put(out.mask, active_B),
        lengths=out.lengths + active_B.astype(jnp.int32),
        logprobs=put(out.logprobs, masked(choice.logprob_B, 0.0)),
        sampling_logprobs=put(out.sampling_logprobs, masked(choice.sampling_logprob_B, 0.0)),
        topk_ids=topk_ids,
        topk_logprobs=topk_logprobs,
    )


@functools.partial(
    jax.jit,
    static_argnums=(0,),
    static_argnames=("max_new_tokens", "flags", "num_topk", "cache_dtype", "mesh", "unstack_layers"),
)
def decode(
    graphdef,
    state,
    prompt_ids_BxT: jnp.ndarray,
    prompt_mask_BxT: jnp.ndarray,
    key,
    params: SamplingParams,
    *,
    max_new_tokens: int,
    flags: FilterFlags,
    num_topk: int,
    cache_dtype: str | None,
    mesh: Mesh | None,
    unstack_layers: bool = False,
) -> GenerationOutput:
    """Generates ``max_new_tokens`` tokens for each prompt row (see module doc).

    Args:
        graphdef, state: ``nnx.split(model)``.
        prompt_ids_BxT: int32 prompt ids (any padding; left padding is usual).
        prompt_mask_BxT: bool, True on real prompt tokens.
        key: PRNG key; step ``i`` uses ``fold_in(key, i)``.
        params: traced :class:`SamplingParams`.
        max_new_tokens: ``N``.
        flags: static :class:`FilterFlags`.
        num_topk: also record the unfiltered top-``num_topk`` log-probs.
        cache_dtype: KV cache dtype (``None``: the model's compute dtype).
        mesh: constrain the cache and outputs to batch sharding on it.
        unstack_layers: decode steps run the layers unrolled over per-layer
            weight copies made once before the loop (see
            ``Decoder.unstacked_block_states``), instead of slicing (copying)
            every layer out of the stacked weights at every step.
    """
    model = nnx.merge(graphdef, state)
    batch, prompt_len = prompt_ids_BxT.shape

    def constrain(tree, shardings):
        return tree if mesh is None else jax.lax.with_sharding_constraint(tree, shardings)

    cache = model.init_cache(batch, prompt_len + max_new_tokens - 1, dtype=cache_dtype)
    if mesh is not None:
        cache = constrain(cache, kv_cache_shardings(cache, mesh))
    prefill = model(prompt_ids_BxT, prompt_mask_BxT, cache=cache, return_logits=False)
    last_B = last_real_index(prompt_mask_BxT)
    hidden_Bxd = jnp.take_along_axis(prefill.hidden_states, last_B[:, None, None], axis=1)[:, 0]
    choice = choose_tokens(
        next_token_logits(model, hidden_Bxd), jax.random.fold_in(key, 0), flags, params, num_topk
    )
    running_B = jnp.ones((batch,), bool)
    out = _empty_output(batch, max_new_tokens, num_topk, params.pad_id)
    out = _write_column(out, 0, choice, running_B, params.pad_id)
    done_B = _is_eos(choice.token_B, params.eos_ids_E)
    block_states = None
    if unstack_layers:
        # The barrier keeps XLA from sinking the slices back into the loop.
        block_states = jax.lax.optimization_barrier(model.unstacked_block_states())

    def keep_going(carry):
        step, _, _, _, done_B, _ = carry
        return (step < max_new_tokens) & ~jnp.all(done_B)

    def one_step(carry):
        step, cache, token_B, fed_real_B, done_B, out = carry
        forward = model(
            token_B[:, None], fed_real_B[:, None], cache=cache, return_logits=False,
            block_states=block_states,
        )
        logits_BxV = next_token_logits(model, forward.hidden_states[:, 0])
        choice = choose_tokens(logits_BxV, jax.random.fold_in(key, step), flags, params, num_topk)
        running_B = ~done_B
        out = _write_column(out, step, choice, running_B, params.pad_id)
        token_B = jnp.where(running_B, choice.token_B, params.pad_id)
        done_B = done_B | _is_eos(token_B, params.eos_ids_E)
        return step + 1, forward.cache, token_B, running_B, done_B, out

    carry = (jnp.int32(1), prefill.cache, choice.token_B, running_B, done_B, out)
    out = jax.lax.while_loop(keep_going, one_step, carry)[-1]
    if mesh is not None:
        out = constrain(out, jax.tree.map(lambda x: batch_sharding(mesh, x.ndim), out))
    return out
