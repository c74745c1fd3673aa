"""Two-model decoding: the student and the teacher step together, each over its own KV cache.

Some on-policy methods draw each token from a rule over *both* models' next-token
distributions at the same prefix. :func:`decode_paired` is one jitted program
(prefill of both models, then a ``while_loop``) with one of two rules, chosen by
the static ``rule`` argument:

* ``'speculative'`` (Speculative KD, Xu et al., 2024): the student proposes
  ``y ~ q`` (the sampling filters apply); the proposal is kept when it lies in
  the teacher's top ``K`` at that position, that is when fewer than ``K``
  vocabulary entries have a teacher logit strictly above the proposal's (so
  ties with the ``K``-th logit are kept, the filters' threshold rule); otherwise
  a token drawn from the teacher (same filters) replaces it. Both models are
  then fed the token that was kept. ``K`` is traced (``PairedParams.top_k``).
* ``'mixture'`` (MiniLLM's teacher-mixed sampling, Gu et al., 2024): the token
  is drawn from ``α · p + (1 − α) · q``, ``p`` and ``q`` the teacher's and the
  student's sampling distributions (after the filters); ``α`` is traced.

Each step also records, for the kept token ``y``, ``log q(y)`` and the log of
the distribution ``y`` was drawn from (``log mix(y)`` under ``'mixture'``;
``log q(y)`` under ``'speculative'``), so a loss can weigh the token by
``q(y) / mix(y)``, and whether the teacher replaced it. The vocabularies are
compared over their first ``vocab_size`` rows (a padded head's extra rows are
never drawn).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jdistill.models.sharding import batch_sharding, kv_cache_shardings, state_shardings
from jdistill.sampling.decode import last_real_index, next_token_logits
from jdistill.sampling.filters import FilterFlags, filter_logits
from jdistill.sampling.generation import padded_eos_array
from jdistill.sampling.responses import SamplingSettings, host_arrays, prompt_batches
from jdistill.sampling.step import SamplingParams, choose_tokens
from jdistill.sampling.stop_policy import StopTokens

PAIRED_RULES = ("speculative", "mixture")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PairedParams:
    """Traced numbers of the pairing rule.

    Attributes:
        top_k: int32 ``K`` of ``'speculative'`` (teacher top-``K`` acceptance).
        alpha: float32 teacher share ``α`` of ``'mixture'``.
    """

    top_k: jnp.ndarray
    alpha: jnp.ndarray


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PairedOutput:
    """Tokens of a paired decode; every array is ``[B, N]`` (``lengths`` ``[B]``).

    Attributes:
        tokens: int32 kept ids (pad id after a row ends).
        mask: bool, True on real generated tokens (the stop token included).
        lengths: int32 real tokens per row.
        student_logprobs: float32 ``log q(y)`` under the student's sampling
            distribution (0 where ``mask`` is False).
        behaviour_logprobs: float32 log-probability of ``y`` under the
            distribution it was drawn from (``log mix(y)`` for ``'mixture'``,
            ``log q(y)`` for ``'speculative'``; 0 where ``mask`` is False).
        replaced: bool, the teacher replaced the student's proposal
            (``'speculative'`` only; False elsewhere).
    """

    tokens: jnp.ndarray
    mask: jnp.ndarray
    lengths: jnp.ndarray
    student_logprobs: jnp.ndarray
    behaviour_logprobs: jnp.ndarray
    replaced: jnp.ndarray


def teacher_rank_accepts(teacher_logits_BxV: jnp.ndarray, token_B: jnp.ndarray, top_k) -> jnp.ndarray:
    """``[B]`` bool: ``token_B`` lies in the teacher's top ``top_k`` (fewer than ``K`` logits strictly above it).

    >>> import jax.numpy as jnp
    >>> logits = jnp.array([[3.0, 1.0, 2.0, 2.0]])
    >>> [bool(teacher_rank_accepts(logits, jnp.array([t]), 2)[0]) for t in range(4)]
    [True, False, True, True]
    """
    logits_BxV = teacher_logits_BxV.astype(jnp.float32)
    chosen_B = jnp.take_along_axis(logits_BxV, token_B[:, None], axis=-1)
    above_B = jnp.sum(logits_BxV > chosen_B, axis=-1)
    return above_B < top_k


def _sampling_logprobs(logits_BxV, flags: FilterFlags, params: SamplingParams) -> jnp.ndarray:
    """Log-probabilities of the distribution tokens are drawn from (unfiltered softmax when greedy)."""
    logits_BxV = logits_BxV.astype(jnp.float32)
    if flags.greedy:
        return jax.nn.log_softmax(logits_BxV, axis=-1)
    filtered = filter_logits(logits_BxV, flags, temperature=params.temperature, top_p=params.top_p, min_p=params.min_p)
    return jax.nn.log_softmax(filtered, axis=-1)


def _take_B(values_BxV, index_B):
    return jnp.take_along_axis(values_BxV, index_B[:, None], axis=-1)[:, 0]


def paired_choice(student_logits_BxV, teacher_logits_BxV, key, *, rule: str, flags: FilterFlags,
                  params: SamplingParams, paired: PairedParams):
    """One step of the rule: ``(token_B, student_logprob_B, behaviour_logprob_B, replaced_B)``."""
    student_key, teacher_key = jax.random.split(key)
    student_lp_BxV = _sampling_logprobs(student_logits_BxV, flags, params)
    if rule == "speculative":
        proposal = choose_tokens(student_logits_BxV, student_key, flags, params, 0).token_B
        accept_B = teacher_rank_accepts(teacher_logits_BxV, proposal, paired.top_k)
        fallback = choose_tokens(teacher_logits_BxV, teacher_key, flags, params, 0).token_B
        token_B = jnp.where(accept_B, proposal, fallback)
        student_lp_B = _take_B(student_lp_BxV, token_B)
        return token_B, student_lp_B, student_lp_B, ~accept_B
    teacher_lp_BxV = _sampling_logprobs(teacher_logits_BxV, flags, params)
    alpha = paired.alpha.astype(jnp.float32)
    # log(α p + (1 − α) q), stable where either side is -inf (a filtered token).
    mix_lp_BxV = jnp.logaddexp(jnp.log(alpha) + teacher_lp_BxV, jnp.log1p(-alpha) + student_lp_BxV)
    if flags.greedy:
        token_B = jnp.argmax(mix_lp_BxV, axis=-1).astype(jnp.int32)
    else:
        token_B = jax.random.categorical(student_key, mix_lp_BxV, axis=-1).astype(jnp.int32)
    replaced_B = jnp.zeros(token_B.shape, bool)
    return token_B, _take_B(student_lp_BxV, token_B), _take_B(mix_lp_BxV, token_B), replaced_B


@functools.partial(
    jax.jit,
    static_argnums=(0, 2),
    static_argnames=("rule", "max_new_tokens", "flags", "vocab_size", "mesh", "unstack_layers"),
)
def decode_paired(student_graphdef, student_state, teacher_graphdef, teacher_state, prompt_ids_BxT,
                  prompt_mask_BxT, key, params: SamplingParams, paired: PairedParams, *, rule: str,
                  max_new_tokens: int, flags: FilterFlags, vocab_size: int, mesh: Mesh | None = None,
                  unstack_layers: bool = False) -> PairedOutput:
    """Generates ``max_new_tokens`` tokens per prompt row with both models (see the module doc).

    Args:
        student_graphdef, student_state, teacher_graphdef, teacher_state: ``nnx.split`` of each model.
        prompt_ids_BxT, prompt_mask_BxT: the (left-padded) prompts, one tokenization for both models.
        key: PRNG key; step ``i`` uses ``fold_in(key, i)``.
        params: traced sampling numbers (temperature, top-p, min-p, stop ids, pad id).
        paired: traced rule numbers.
        rule: ``'speculative'`` | ``'mixture'``.
        max_new_tokens: ``N``.
        flags: static filter flags.
        vocab_size: compare the first ``vocab_size`` rows of both heads.
        mesh: constrain the caches and outputs to batch sharding.
        unstack_layers: per-layer weight copies for the decode steps (see ``decode``).
    """
    student = nnx.merge(student_graphdef, student_state)
    teacher = nnx.merge(teacher_graphdef, teacher_state)
    batch, prompt_len = prompt_ids_BxT.shape
    last_B = last_real_index(prompt_mask_BxT)

    def start(model):
        cache = model.init_cache(batch, prompt_len + max_new_tokens - 1)
        if mesh is not None:
            cache = jax.lax.with_sharding_constraint(cache, kv_cache_shardings(cache, mesh))
        out = model(prompt_ids_BxT, prompt_mask_BxT, cache=cache, return_logits=False)
        hidden_Bxd = jnp.take_along_axis(out.hidden_states, last_B[:, None, None], axis=1)[:, 0]
        blocks = jax.lax.optimization_barrier(model.unstacked_block_states()) if unstack_layers else None
        return out.cache, next_token_logits(model, hidden_Bxd)[:, :vocab_size], blocks

    student_cache, student_logits, student_blocks = start(student)
    teacher_cache, teacher_logits, teacher_blocks = start(teacher)

    def is_stop(token_B):
        return jnp.any(token_B[:, None] == params.eos_ids_E[None, :], axis=-1)

    shape = (batch, max_new_tokens)
    out = PairedOutput(tokens=jnp.full(shape, params.pad_id, jnp.int32), mask=jnp.zeros(shape, bool),
                       lengths=jnp.zeros((batch,), jnp.int32), student_logprobs=jnp.zeros(shape, jnp.float32),
                       behaviour_logprobs=jnp.zeros(shape, jnp.float32), replaced=jnp.zeros(shape, bool))

    def write(out, step, choice, active_B):
        token_B, student_lp_B, behaviour_lp_B, replaced_B = choice

        def put(array, value):
            return jax.lax.dynamic_update_index_in_dim(array, value, step, axis=1)

        return PairedOutput(
            tokens=put(out.tokens, jnp.where(active_B, token_B, params.pad_id)),
            mask=put(out.mask, active_B),
            lengths=out.lengths + active_B.astype(jnp.int32),
            student_logprobs=put(out.student_logprobs, jnp.where(active_B, student_lp_B, 0.0)),
            behaviour_logprobs=put(out.behaviour_logprobs, jnp.where(active_B, behaviour_lp_B, 0.0)),
            replaced=put(out.replaced, active_B & replaced_B),
        )

    def choose(student_logits, teacher_logits, step):
        return paired_choice(student_logits, teacher_logits, jax.random.fold_in(key, step), rule=rule, flags=flags,
                             params=params, paired=paired)

    choice = choose(student_logits, teacher_logits, 0)
    running_B = jnp.ones((batch,), bool)
    out = write(out, 0, choice, running_B)
    done_B = is_stop(choice[0])

    def keep_going(carry):
        step, *_, done_B, _ = carry
        return (step < max_new_tokens) & ~jnp.all(done_B)

    def one_step(carry):
        step, student_cache, teacher_cache, token_B, fed_real_B, done_B, out = carry
        s = student(token_B[:, None], fed_real_B[:, None], cache=student_cache, return_logits=False,
                    block_states=student_blocks)
        t = teacher(token_B[:, None], fed_real_B[:, None], cache=teacher_cache, return_logits=False,
                    block_states=teacher_blocks)
        choice = choose(next_token_logits(student, s.hidden_states[:, 0])[:, :vocab_size],
                        next_token_logits(teacher, t.hidden_states[:, 0])[:, :vocab_size], step)
        running_B = ~done_B
        out = write(out, step, choice, running_B)
        token_B = jnp.where(running_B, choice[0], params.pad_id)
        done_B = done_B | is_stop(token_B)
        return step + 1, s.cache, t.cache, token_B, running_B, done_B, out

    carry = (jnp.int32(1), student_cache, teacher_cache, choice[0], running_B, done_B, out)
    out = jax.lax.while_loop(keep_going, one_step, carry)[-1]
    if mesh is not None:
        out = jax.lax.with_sharding_constraint(out, jax.tree.map(lambda x: batch_sharding(mesh, x.ndim), out))
    return out


@dataclasses.dataclass(frozen=True)
class PairedResponse:
    """One prompt's paired-decode tokens (host arrays of length ``n``, the stop token included when it ended).

    Attributes:
        ids: int32 kept ids.
        student_logprobs, behaviour_logprobs: float32 per token (see :class:`PairedOutput`).
        replaced: bool per token.
    """

    ids: np.ndarray
    student_logprobs: np.ndarray
    behaviour_logprobs: np.ndarray
    replaced: np.ndarray


def generate_paired(student, teacher, prompts, settings: SamplingSettings, stop: StopTokens, *, rule: str,
                    key, top_k: int = 1, alpha: float = 0.0, batch_size: int, mesh=None, width: int | None = None,
                    vocab_size: int | None = None, unstack_layers: bool | None = None) -> list[PairedResponse]:
    """Answers ``prompts`` (token-id sequences) with :func:`decode_paired`, one :class:`PairedResponse` each.

    The prompts are batched by :func:`jdistill.sampling.prompt_batches` (the
    batch starting at position ``s`` of the length-sorted order uses
    ``fold_in(key, s)``); both models read the same ids, so they must share a
    tokenizer. ``vocab_size`` defaults to the smaller of the two heads.
    """
    if rule not in PAIRED_RULES:
        raise ValueError(f"rule must be one of {PAIRED_RULES}, got {rule!r}")
    flags = FilterFlags.from_settings(temperature=settings.temperature, top_k=settings.top_k,
                                      top_p=settings.top_p, min_p=settings.min_p)
    params = SamplingParams(temperature=np.float32(max(float(settings.temperature), 1e-6)),
                            top_p=np.float32(settings.top_p), min_p=np.float32(settings.min_p),
                            eos_ids_E=padded_eos_array(stop.eos_ids), pad_id=np.int32(stop.pad_id))
    paired = PairedParams(top_k=np.int32(top_k), alpha=np.float32(alpha))
    vocab = int(vocab_size or min(student.config.vocab_size, teacher.config.vocab_size))
    student_graphdef, student_state = nnx.split(student)
    teacher_graphdef, teacher_state = nnx.split(teacher)
    if mesh is not None:
        student_state = jax.device_put(student_state, state_shardings(student_state, mesh))
        teacher_state = jax.device_put(teacher_state, state_shardings(teacher_state, mesh))
    unstack = jax.default_backend() == "cpu" if unstack_layers is None else bool(unstack_layers)
    responses: list[PairedResponse | None] = [None] * len(prompts)
    position = 0
    for batch in prompt_batches(prompts, batch_size=batch_size, pad_id=stop.pad_id, width=width):
        ids_BxT, mask_BxT = batch.ids_BxT, batch.mask_BxT
        if mesh is not None:
            ids_BxT = jax.device_put(ids_BxT, batch_sharding(mesh))
            mask_BxT = jax.device_put(mask_BxT, batch_sharding(mesh))
        out = decode_paired(student_graphdef, student_state, teacher_graphdef, teacher_state, ids_BxT, mask_BxT,
                            jax.random.fold_in(key, position), params, paired, rule=rule,
                            max_new_tokens=int(settings.max_new_tokens), flags=flags, vocab_size=vocab, mesh=mesh,
                            unstack_layers=unstack)
        host = host_arrays(out)
        for i, row in enumerate(batch.rows):
            n = int(host.lengths[i])
            responses[row] = PairedResponse(host.tokens[i, :n].astype(np.int32),
                                            host.student_logprobs[i, :n].astype(np.float32),
                                            host.behaviour_logprobs[i, :n].astype(np.float32),
                                            host.replaced[i, :n].astype(bool))
        position += len(batch.rows)
    return responses
