r"""The chunked engine behind the fused-linear losses of :mod:`jdistill.losses.fused`.

It evaluates

.. math:: L = \sum_i w_i\, f\big(c_1(h^{(1)}_i W^{(1)}), \dots, c_P(h^{(P)}_i W^{(P)})\big)_i

for ``P`` (hidden, head) pairs (``c_p`` the identity, or a logit soft-cap
``c_p(z) = \text{cap}_p \tanh(z / \text{cap}_p)`` as Gemma 2's head applies), per-token weights ``w`` and a per-token loss
``f`` on logits, in chunks of tokens, so that no ``[tokens, V]`` array exists
in the forward or the backward pass. Entries with ``w_i = 0`` contribute
exactly 0, even where ``f`` is ``inf`` or NaN.

How the memory stays bounded:

* A ``jax.custom_vjp`` function runs one ``lax.scan`` over the chunks. Each step
  builds the chunk's ``[C, V]`` float32 logits, evaluates ``f`` and, when a
  gradient is wanted, differentiates the chunk's weighted sum with
  ``jax.vjp`` *in the same step* (as Liger-Kernel does): the logits
  cotangent becomes the hidden cotangent ``dZ W^T`` (a scan output) and adds
  ``h^T dZ`` to a float32 head-gradient carry. Only input-sized gradients are
  kept as residuals; the backward rule merely scales them by the incoming
  cotangent, so nothing is recomputed and no logits are stored.
* With ``symbolic_zeros`` the rule knows which inputs are differentiated. A
  teacher under ``stop_gradient`` (or simply not differentiated) costs no
  gradient matmul and no head-gradient buffer; a differentiated one gets its
  exact gradient.
* Chunks are strided (chunk ``j`` holds tokens ``j, n + j, 2n + j, ...``), so a
  token axis sharded over a data axis stays evenly sharded inside every chunk.

Because the forward rule already computes the gradient, the rule is
first-order only (no ``jax.jvp``, no Hessians).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from jdistill.losses import explicit_axes

Array = jax.Array
# token_fn(logits: tuple of [C, V] float32, per_token: pytree of [C, ...], shared: pytree) -> [C] values
TokenFn = Callable[[tuple[Array, ...], Any, Any], Array]

_LOGITS_SPEC = {"dv": "cd,dv->cv", "vd": "cd,vd->cv"}
_HIDDEN_GRAD_SPEC = {"dv": "cv,dv->cd", "vd": "cv,vd->cd"}
_HEAD_GRAD_SPEC = {"dv": "cd,cv->dv", "vd": "cd,cv->vd"}


def head_vocab_axis(layout: str) -> int:
    """The vocabulary axis of a head stored as ``'dv'`` ([hidden, V]) or ``'vd'`` ([V, hidden])."""
    return 1 if layout == "dv" else 0


def chunk_logits(hidden_CxD: Array, head: Array, layout: str, vocab_size: int) -> Array:
    """``[C, vocab_size]`` float32 logits of one chunk (extra head columns are dropped)."""
    logits_CxV = explicit_axes.einsum(_LOGITS_SPEC[layout], hidden_CxD, head, preferred_element_type=jnp.float32)
    return logits_CxV[:, :vocab_size] if logits_CxV.shape[1] != vocab_size else logits_CxV


def soft_cap(logits: Array, cap: float | None) -> Array:
    """``tanh(logits / cap) * cap`` (a final-logit soft-cap); ``logits`` itself when ``cap`` is None."""
    if cap is None:
        return logits
    return jnp.tanh(logits / cap) * cap


def to_chunks(x_N: Array, num_chunks: int, chunk_size: int) -> Array:
    """``[N, ...] -> [num_chunks, chunk_size, ...]`` strided chunks, zero-padded at the end."""
    padding = num_chunks * chunk_size - x_N.shape[0]
    if padding:
        x_N = jnp.pad(x_N, [(0, padding)] + [(0, 0)] * (x_N.ndim - 1))
    return jnp.swapaxes(x_N.reshape((chunk_size, num_chunks) + x_N.shape[1:]), 0, 1)


def weighted_sum(
    token_fn: TokenFn,
    hiddens: Sequence[Array],
    heads: Sequence[Array],
    layouts: Sequence[str],
    vocab_size: int,
    weights_N: Array,
    per_token: Any,
    shared: Any,
    chunk_size: int,
    softcaps: Sequence[float | None] | None = None,
) -> Array:
    r"""``sum_i w_i f(logits_i)_i`` over ``N`` tokens, ``chunk_size`` tokens at a time.

    Args:
      token_fn: per-token loss ``(logits, per_token_chunk, shared) -> [C]``;
        ``logits`` holds one ``[C, vocab_size]`` float32 array per pair.
      hiddens: one ``[N, d_p]`` array per pair.
      heads: one ``[d_p, V_p]`` (``'dv'``) or ``[V_p, d_p]`` (``'vd'``) array per
        pair, ``V_p >= vocab_size``; columns past ``vocab_size`` are ignored.
      layouts: ``'dv'`` or ``'vd'`` per pair.
      vocab_size: the vocabulary size the logits are cut to.
      weights_N: ``[N]`` float weights; zero weights select nothing.
      per_token: pytree of ``[N, ...]`` arrays chunked along with the tokens.
      shared: pytree of arrays every chunk sees whole.
      chunk_size: tokens per chunk, ``>= 1``.
      softcaps: per pair, a final-logit soft-cap applied to that pair's logits
        before ``token_fn`` (and differentiated through), or None; default none.

    Returns:
      A float32 scalar, differentiable (first order) in every floating input.
    """
    num_tokens = weights_N.shape[0]
    num_chunks = -(-num_tokens // chunk_size)
    chunk = lambda x: to_chunks(x, num_chunks, chunk_size)  # noqa: E731
    chunked = (
        tuple(chunk(h) for h in hiddens),
        chunk(weights_N.astype(jnp.float32)),
        jax.tree.map(chunk, per_token),
    )
    softcaps = (None,) * len(layouts) if softcaps is None else tuple(softcaps)
    if len(softcaps) != len(layouts):
        raise ValueError(f"weighted_sum: {len(softcaps)} softcaps for {len(layouts)} (hidden, head) pairs")
    fn = _make_weighted_sum(token_fn, tuple(layouts), vocab_size, softcaps)
    return fn(chunked, tuple(heads), shared)


def _make_weighted_sum(token_fn: TokenFn, layouts: tuple[str, ...], vocab_size: int, softcaps: tuple):
    """Builds the custom-VJP scan for one static configuration."""

    def chunk_value(logits, weights_C, per_token_C, shared):
        # The soft-cap is inside the differentiated function: the logits
        # gradients are those of the uncapped matmul output.
        logits = tuple(soft_cap(z, cap) for z, cap in zip(logits, softcaps))
        values_C = token_fn(logits, per_token_C, shared)
        # where, not multiply: an inf or NaN value under a zero weight must not leak.
        return jnp.sum(jnp.where(weights_C != 0, values_C, 0.0) * weights_C)

    def scan(chunked, heads, shared, wants):
        """One pass over the chunks: the value and, for ``wants``' true leaves, gradients."""
        hidden_wants, weights_want, per_token_wants = wants["chunked"]
        head_wants = wants["heads"]
        pair_wants = tuple(h or w for h, w in zip(hidden_wants, head_wants))
        compute_dtypes = tuple(jnp.result_type(h.dtype, w.dtype) for h, w in zip(chunked[0], heads))

        def step(carry, xs):
            total, head_grads, shared_grad = carry
            hiddens_C, weights_C, per_token_C = xs
            logits = tuple(chunk_logits(h, w, lay, vocab_size) for h, w, lay in zip(hiddens_C, heads, layouts))
            args = (logits, weights_C, per_token_C, shared)
            arg_wants = (pair_wants, weights_want, per_token_wants, wants["shared"])
            value, grads = _value_and_selected_grads(chunk_value, args, arg_wants)
            logit_grads, weights_grad_C, per_token_grad_C, shared_grad_C = grads
            hidden_grads_C, new_head_grads = [], []
            for p, layout in enumerate(layouts):
                hidden_grad, head_grad = None, head_grads[p]
                if pair_wants[p]:
                    full_vocab = heads[p].shape[head_vocab_axis(layout)]
                    dlogits_CxV = jnp.pad(logit_grads[p], ((0, 0), (0, full_vocab - vocab_size)))
                    dlogits_CxV = dlogits_CxV.astype(compute_dtypes[p])
                    if hidden_wants[p]:
                        hidden_grad = explicit_axes.einsum(
                            _HIDDEN_GRAD_SPEC[layout], dlogits_CxV, heads[p], preferred_element_type=jnp.float32
                        )
                        hidden_grad = explicit_axes.like(hidden_grad, hiddens_C[p])
                    if head_wants[p]:
                        head_grad = head_grad + explicit_axes.like(explicit_axes.einsum(
                            _HEAD_GRAD_SPEC[layout], hiddens_C[p], dlogits_CxV, preferred_element_type=jnp.float32
                        ), head_grad)
                hidden_grads_C.append(hidden_grad)
                new_head_grads.append(head_grad)
            shared_grad = jax.tree.map(jnp.add, shared_grad, shared_grad_C)
            carry = (total + value, tuple(new_head_grads), shared_grad)
            return carry, (tuple(hidden_grads_C), weights_grad_C, per_token_grad_C)

        init = (
            jnp.zeros((), jnp.float32),
            # zeros_like keeps each head's sharding (the carry's type under Explicit axes).
            tuple(jnp.zeros_like(w, jnp.float32) if want else None for w, want in zip(heads, head_wants)),
            jax.tree.map(lambda x, want: jnp.zeros(x.shape, jnp.float32) if want else None, shared, wants["shared"]),
        )
        (total, head_grads, shared_grads), chunk_grads = jax.lax.scan(step, init, chunked)
        grads = {"chunked": chunk_grads, "heads": head_grads, "shared": shared_grads}
        return total, grads

    def no_wants(chunked, heads, shared):
        return {
            "chunked": jax.tree.map(lambda _: False, chunked),
            "heads": tuple(False for _ in heads),
            "shared": jax.tree.map(lambda _: False, shared),
        }

    @jax.custom_vjp
    def fused(chunked, heads, shared):
        total, _ = scan(chunked, heads, shared, no_wants(chunked, heads, shared))
        return total

    def fused_fwd(chunked, heads, shared):
        wants = jax.tree.map(_is_differentiated, {"chunked": chunked, "heads": heads, "shared": shared})
        chunked, heads, shared = jax.tree.map(lambda p: p.value, (chunked, heads, shared))
        total, grads = scan(chunked, heads, shared, wants)
        # Keep the gradients in their inputs' dtypes; None marks an input with no gradient.
        primals = {"chunked": chunked, "heads": heads, "shared": shared}
        residuals = jax.tree.map(
            lambda want, x, g: g.astype(x.dtype) if want else None, wants, primals, _fill_none(grads, wants)
        )
        return total, residuals

    def fused_bwd(residuals, cotangent):
        if isinstance(cotangent, SymbolicZero):
            return jax.tree.map(lambda _: None, (residuals["chunked"], residuals["heads"], residuals["shared"]))
        scale = lambda g: (cotangent * g).astype(g.dtype)  # noqa: E731
        return tuple(jax.tree.map(scale, residuals[k]) for k in ("chunked", "heads", "shared"))

    fused.defvjp(fused_fwd, fused_bwd, symbolic_zeros=True)
    return fused


def _is_differentiated(primal) -> bool:
    return bool(primal.perturbed) and jnp.issubdtype(primal.value.dtype, jnp.inexact)


def _fill_none(grads, wants):
    """Aligns a gradient pytree (with None where nothing was computed) to ``wants``' leaves."""
    leaves, treedef = jax.tree.flatten(wants)
    grad_leaves = treedef.flatten_up_to(grads)
    return jax.tree.unflatten(treedef, [g if w else None for g, w in zip(grad_leaves, leaves)])


def _value_and_selected_grads(fn, args, wants):
    """``fn(*args)`` and its gradient w.r.t. the leaves of ``args`` whose ``wants`` leaf is True.

    Returns the value and a pytree shaped like ``args`` holding gradients
    (float32) at the wanted leaves and None elsewhere.
    """
    leaves, treedef = jax.tree.flatten(args)
    want_leaves = treedef.flatten_up_to(wants)
    picked = [i for i, want in enumerate(want_leaves) if want]

    def of_picked(*picked_leaves):
        full = list(leaves)
        for i, leaf in zip(picked, picked_leaves):
            full[i] = leaf
        return fn(*jax.tree.unflatten(treedef, full))

    if not picked:
        return of_picked(), jax.tree.unflatten(treedef, [None] * len(leaves))
    value, vjp = jax.vjp(of_picked, *(leaves[i] for i in picked))
    picked_grads = vjp(jnp.ones_like(value))
    grads = [None] * len(leaves)
    for i, g in zip(picked, picked_grads):
        grads[i] = g.astype(jnp.float32)
    return value, jax.tree.unflatten(treedef, grads)
