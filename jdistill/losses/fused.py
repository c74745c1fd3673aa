r"""Fused-linear distillation losses: from hidden states and LM heads, never full logits.

A distillation loss on ``[tokens, V]`` logits holds several ``[tokens, V]``
float32 buffers for each model in its forward and backward pass (0.6 MB per
token and buffer at ``V = 151936``). The functions here take the last hidden
states and the LM-head weights instead and evaluate the very same kernels of
:mod:`jdistill.losses` chunk by chunk (:mod:`jdistill.losses.fused_core`), so
their temporary memory is ``O(chunk x V)`` and their values and gradients are
those of the logits path.

Conventions shared by every function here:

* Hidden states are ``[..., d]``; all leading axes are tokens (``[B, T, d]``
  typically). Student and teacher hidden sizes may differ.
* Heads are ``[d, V]`` (``head_layout='dv'``, the default, as
  ``model.lm_head_weight()`` returns it) or ``[V, d]`` (``'vd'``, e.g. a tied
  embedding table). The layout is never guessed; give one value for both
  heads or a ``(student, teacher)`` pair. A hidden size that does not match the
  head under the given layout is an error.
* Both heads must cover one shared vocabulary. A head padded with extra rows
  (Qwen2.5-7B: 152064 against the smaller models' 151936) is cut to
  ``vocab_size`` on the fly (the head is not copied); without ``vocab_size``,
  different vocabulary sizes are an error.
* ``chunk_size=None`` picks the chunk from ``memory_budget_bytes``
  (:func:`fused_chunk_size`).
* ``logit_softcap``: a model whose head soft-caps its logits (Gemma 2's
  ``final_logit_softcapping``, ``model.config.final_logit_softcap``) gets the
  same cap, ``tanh(z / cap) * cap``, applied to each chunk's logits before the
  loss (values and gradients through it); one value for every head or a
  ``(student, teacher)`` pair. ``None`` (the default) applies none.
* Gradients are exact (those of the logits path) for every floating input that
  is differentiated, teacher inputs included; inputs that are not
  differentiated, e.g. a teacher under ``jax.lax.stop_gradient``, cost nothing.
  First-order reverse mode only (``jax.grad``, ``jax.vjp``).
* Sharding is left to GSPMD: under ``jax.jit`` a head sharded over the
  vocabulary turns every log-sum-exp into a cross-shard reduction, and tokens
  sharded over data axes stay sharded inside each (strided) chunk.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jdistill.losses import distributions as dist
from jdistill.losses import divergences
from jdistill.losses import fused_core
from jdistill.losses.cross_entropy import token_cross_entropy

Array = jax.Array

DEFAULT_MEMORY_BUDGET_BYTES = 512 * 2**20
# Float32 [chunk, V] buffers alive at once while one chunk's value and gradient
# are computed (both models' logits, the kernel's intermediates, the logits
# gradients). XLA's memory_analysis on CPU measures 5.1 (total_variation) to
# 13.2 (adaptive_kl, which sorts the vocabulary); forward_kl takes 7.1.
FUSED_LIVE_ROWS = 14
_LAYOUTS = ("dv", "vd")
_REDUCTIONS = ("token", "sequence")


def fused_chunk_size(
    num_tokens: int,
    vocab_size: int,
    *,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    live_rows: int = FUSED_LIVE_ROWS,
) -> int:
    r"""Tokens per chunk such that the chunk temporaries fit ``memory_budget_bytes``.

    .. math:: C = \Big\lfloor \frac{\text{budget}}{4 \cdot \text{live\_rows} \cdot V} \Big\rfloor

    rounded down to a multiple of 128 (or of 8 below 128, at least 1), then
    evened out over the ``ceil(N / C)`` chunks so that padding stays under 8
    rows per chunk, and never above ``num_tokens``. The head gradients
    (``[d, V]`` per differentiated head) come on top of the budget.

    Args:
      num_tokens: number of tokens ``N`` of the loss.
      vocab_size: vocabulary size ``V``.
      memory_budget_bytes: bytes allowed for the chunk temporaries.
      live_rows: float32 ``[C, V]`` buffers alive per chunk.

    Returns:
      The chunk size, in ``[1, num_tokens]``.

    Example:
      >>> from jdistill.losses import fused_chunk_size
      >>> fused_chunk_size(8192, 32768)
      256
      >>> fused_chunk_size(8192, 151936)
      56
      >>> fused_chunk_size(8192, 151936, memory_budget_bytes=2**30)
      120
      >>> fused_chunk_size(1000, 151936)  # 18 chunks of 55.6 rounded up to 56
      56
      >>> fused_chunk_size(1100, 32768)  # 5 chunks of 220 rounded up to 224
      224
      >>> fused_chunk_size(100, 32768)
      100
    """
    if num_tokens < 1 or vocab_size < 1:
        raise ValueError(f"fused_chunk_size: num_tokens ({num_tokens}) and vocab_size ({vocab_size}) must be >= 1.")
    chunk = int(memory_budget_bytes) // (4 * live_rows * vocab_size)
    if chunk >= 128:
        chunk -= chunk % 128
    elif chunk >= 8:
        chunk -= chunk % 8
    chunk = max(1, min(chunk, num_tokens))
    num_chunks = -(-num_tokens // chunk)
    balanced = -(-num_tokens // num_chunks)
    if chunk >= 8:
        balanced = min(chunk, -(-balanced // 8) * 8)
    return max(1, min(balanced, num_tokens))


def fused_kd_loss(
    student_hidden: Array,
    student_head: Array,
    teacher_hidden: Array,
    teacher_head: Array,
    mask: Array,
    *,
    divergence: str | Callable[..., Array] = "forward_kl",
    temperature=1.0,
    reduction: str = "token",
    normalizer=None,
    head_layout: str | tuple[str, str] = "dv",
    vocab_size: int | None = None,
    chunk_size: int | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    logit_softcap: float | None | tuple[float | None, float | None] = None,
    **divergence_kwargs,
) -> Array:
    r"""A reduced divergence between student and teacher, from hidden states and heads.

    .. math::
        z^s = h^s W^s, \quad z^t = h^t W^t, \qquad
        L = R\big[D(\mathrm{softmax}(z^t/\tau), \mathrm{softmax}(z^s/\tau))\big]

    with ``D`` any divergence of ``losses.DIVERGENCES`` and ``R`` the
    reduction over the tokens selected by ``mask``; equal (values and
    gradients) to ``token_mean(D(z_s, z_t), mask)`` (or ``sequence_mean``)
    without ever holding ``[tokens, V]`` logits.

    Args:
      student_hidden: ``[..., d_s]`` student last hidden states (after the final norm).
      student_head: ``[d_s, V_s]`` (or ``[V_s, d_s]``, see ``head_layout``) student LM head.
      teacher_hidden: ``[..., d_t]`` teacher hidden states, same leading axes.
      teacher_head: ``[d_t, V_t]`` (or ``[V_t, d_t]``) teacher LM head.
      mask: token mask with the leading shape ``[...]`` (bool or 0/1 weights).
      divergence: a name in ``losses.DIVERGENCES`` or a kernel following the
        divergence contract.
      temperature: positive scalar dividing both logits.
      reduction: ``'token'`` (:func:`token_mean`) or ``'sequence'``
        (:func:`sequence_mean`; the last leading axis is time).
      normalizer: optional global token (or sequence) count, as in the reductions.
      head_layout: ``'dv'`` or ``'vd'`` for both heads, or a ``(student, teacher)`` pair.
      vocab_size: shared vocabulary size to cut padded heads to; required when
        ``V_s != V_t``.
      chunk_size: tokens per chunk; None picks it from ``memory_budget_bytes``.
      memory_budget_bytes: budget of the chunk temporaries when ``chunk_size`` is None.
      logit_softcap: final-logit soft-cap of both heads, or a ``(student, teacher)``
        pair (``model.config.final_logit_softcap``); ``None``: none.
      **divergence_kwargs: the kernel's extra arguments (``alpha``, ``beta``,
        ``mu``, ``stop_gradient_mixture``, ``where``). Python numbers stay
        static; array arguments are either scalars, a vocabulary mask
        (``where``, shape ``[V]``), or per-token arrays over leading token
        axes (``alpha`` of shape ``[B]`` for ``[B, T, d]`` hidden states),
        which are chunked with the tokens.

    Returns:
      A float32 scalar; 0 when no token is selected.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jdistill.losses import fused_kd_loss, forward_kl, token_mean
      >>> k = jax.random.split(jax.random.key(0), 4)
      >>> h_s, h_t = jax.random.normal(k[0], (2, 5, 8)), jax.random.normal(k[1], (2, 5, 16))
      >>> w_s, w_t = jax.random.normal(k[2], (8, 32)), jax.random.normal(k[3], (16, 32))
      >>> mask = jnp.ones((2, 5), bool)
      >>> fused = fused_kd_loss(h_s, w_s, h_t, w_t, mask, chunk_size=4)
      >>> bool(jnp.allclose(fused, token_mean(forward_kl(h_s @ w_s, h_t @ w_t), mask)))
      True
    """
    kernel = divergences.get_divergence(divergence) if isinstance(divergence, str) else divergence
    name = "fused_kd_loss"
    layouts = _layouts(head_layout, name)
    softcaps = _softcaps(logit_softcap, name)
    token_shape = _check_pair(student_hidden, student_head, layouts[0], "student", name)
    teacher_shape = _check_pair(teacher_hidden, teacher_head, layouts[1], "teacher", name)
    if teacher_shape != token_shape:
        raise ValueError(
            f"{name}: student_hidden {jnp.shape(student_hidden)} and teacher_hidden {jnp.shape(teacher_hidden)} "
            "must have the same leading (token) axes."
        )
    vocab = _shared_vocab((student_head, teacher_head), layouts, vocab_size, name)
    weights = _reduction_weights(mask, token_shape, reduction, normalizer, name)
    static, per_token, shared = _split_kwargs(dict(divergence_kwargs, temperature=temperature), token_shape, name)

    def token_fn(logits, per_token_C, shared_kwargs):
        student_logits_CxV, teacher_logits_CxV = logits
        return kernel(student_logits_CxV, teacher_logits_CxV, **static, **per_token_C, **shared_kwargs)

    return _run(
        token_fn, (student_hidden, teacher_hidden), (student_head, teacher_head), layouts, vocab, weights,
        per_token, shared, chunk_size, memory_budget_bytes, softcaps,
    )


def fused_cross_entropy(
    hidden: Array,
    head: Array,
    labels: Array,
    mask: Array,
    *,
    temperature=1.0,
    where: Array | None = None,
    reduction: str = "token",
    normalizer=None,
    head_layout: str = "dv",
    vocab_size: int | None = None,
    chunk_size: int | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    logit_softcap: float | None = None,
) -> Array:
    r"""Reduced cross-entropy of ``labels`` under ``softmax(hidden @ head / τ)``, chunked.

    .. math:: L = R\big[-\log \mathrm{softmax}(h W / \tau)_{y}\big]

    Equal to ``token_mean(token_cross_entropy(hidden @ head, labels), mask)``
    (or ``sequence_mean``): the language-modelling term of distillation, and
    DSKD's projected-head terms (pass a projected teacher hidden ``P(h_t)`` of
    size ``d_s`` with ``jax.lax.stop_gradient(student_head)`` for ``CE(z_t2s, y)``).

    Args:
      hidden: ``[..., d]`` hidden states.
      head: ``[d, V]`` (``'dv'``) or ``[V, d]`` (``'vd'``) head.
      labels: integer labels with the leading shape ``[...]``; they must lie in
        ``[0, vocab)`` where ``mask`` selects (a selected label outside it
        gives NaN); unselected labels may be anything (e.g. ``-100``).
      mask: token mask with the leading shape.
      temperature, where: as :func:`jdistill.losses.token_cross_entropy`.
      reduction, normalizer, head_layout, vocab_size, chunk_size,
      memory_budget_bytes, logit_softcap: as :func:`fused_kd_loss` (one head,
      one layout, one soft-cap).

    Returns:
      A float32 scalar.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jdistill.losses import fused_cross_entropy
      >>> h = jax.random.normal(jax.random.key(0), (6, 8))
      >>> w = jax.random.normal(jax.random.key(1), (8, 32))
      >>> y = jnp.arange(6)
      >>> direct = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(h @ w), y[:, None], axis=-1))
      >>> bool(jnp.allclose(fused_cross_entropy(h, w, y, jnp.ones(6), chunk_size=4), direct))
      True
    """
    name = "fused_cross_entropy"
    (layout,) = _layouts(head_layout, name, count=1)
    softcaps = _softcaps(logit_softcap, name, count=1)
    token_shape = _check_pair(hidden, head, layout, "", name)
    if jnp.shape(labels) != token_shape or not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise ValueError(
            f"{name}: labels must be integers of the token shape {token_shape}, got "
            f"{jnp.result_type(labels)} {jnp.shape(labels)}."
        )
    vocab = _shared_vocab((head,), (layout,), vocab_size, name)
    weights = _reduction_weights(mask, token_shape, reduction, normalizer, name)
    static, _, shared = _split_kwargs({"temperature": temperature, "where": where}, token_shape, name)

    def token_fn(logits, labels_C, shared_kwargs):
        (logits_CxV,) = logits
        in_range = (labels_C >= 0) & (labels_C < vocab)
        values_C = token_cross_entropy(logits_CxV, jnp.where(in_range, labels_C, 0), **static, **shared_kwargs)
        return jnp.where(in_range, values_C, jnp.nan)

    labels_N = jnp.reshape(labels, (-1,))
    return _run(
        token_fn, (hidden,), (head,), (layout,), vocab, weights, labels_N, shared, chunk_size, memory_budget_bytes,
        softcaps,
    )


def fused_cald(
    student_hidden_t: Array,
    teacher_hidden_t: Array,
    mask_t: Array,
    student_hidden_s: Array,
    teacher_hidden_s: Array,
    mask_s: Array,
    student_head: Array,
    teacher_head: Array,
    *,
    alpha_t=0.1,
    alpha_s=0.1,
    beta=0.5,
    temperature=1.0,
    reduction: str = "sequence",
    normalizer_t=None,
    normalizer_s=None,
    head_layout: str | tuple[str, str] = "dv",
    vocab_size: int | None = None,
    chunk_size: int | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    logit_softcap: float | None | tuple[float | None, float | None] = None,
) -> Array:
    r"""DistiLLM-2's CALD loss (:func:`jdistill.losses.cald`) from hidden states and heads.

    .. math::
        L = (1 - \beta)\, R\big[KL(p \| \alpha_t p + (1 - \alpha_t) q)\big]_{t}
          + \beta\, R\big[KL(q \| (1 - \alpha_s) p + \alpha_s\, \mathrm{sg}(q))\big]_{s}

    Each half is a :func:`fused_kd_loss` over its own rows (teacher responses
    ``_t``, student responses ``_s``); the sequence reduction is exact through
    per-token weights ``m_bt / (n_b S)``.

    Args:
      student_hidden_t, teacher_hidden_t: ``[B, T, d_s]``, ``[B, T, d_t]`` on teacher responses.
      mask_t: ``[B, T]`` response mask of the teacher responses.
      student_hidden_s, teacher_hidden_s: ``[B', T', d_s]``, ``[B', T', d_t]`` on student responses.
      mask_s: ``[B', T']`` response mask of the student responses.
      student_head, teacher_head: the two LM heads (see ``head_layout``).
      alpha_t, alpha_s, beta, temperature, reduction, normalizer_t, normalizer_s:
        as :func:`jdistill.losses.cald` (alphas scalar or per sequence).
      head_layout, vocab_size, chunk_size, memory_budget_bytes, logit_softcap: as
        :func:`fused_kd_loss`.

    Returns:
      A float32 scalar.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jdistill.losses import cald, fused_cald
      >>> k = jax.random.split(jax.random.key(0), 6)
      >>> hs_t, hs_s = jax.random.normal(k[0], (2, 3, 4)), jax.random.normal(k[1], (2, 3, 4))
      >>> ht_t, ht_s = jax.random.normal(k[2], (2, 3, 6)), jax.random.normal(k[3], (2, 3, 6))
      >>> w_s, w_t = jax.random.normal(k[4], (4, 10)), jax.random.normal(k[5], (6, 10))
      >>> m = jnp.ones((2, 3))
      >>> a = jnp.array([0.1, 0.05])
      >>> fused = fused_cald(hs_t, ht_t, m, hs_s, ht_s, m, w_s, w_t, alpha_t=a, alpha_s=a, chunk_size=4)
      >>> plain = cald(hs_t @ w_s, ht_t @ w_t, m, hs_s @ w_s, ht_s @ w_t, m, alpha_t=a, alpha_s=a)
      >>> bool(jnp.allclose(fused, plain))
      True
    """
    dist.check_unit_interval(beta, "beta", "fused_cald")
    common = dict(
        temperature=temperature, reduction=reduction, head_layout=head_layout, vocab_size=vocab_size,
        chunk_size=chunk_size, memory_budget_bytes=memory_budget_bytes, logit_softcap=logit_softcap,
    )
    skl = fused_kd_loss(
        student_hidden_t, student_head, teacher_hidden_t, teacher_head, mask_t,
        divergence="skew_forward_kl", alpha=alpha_t, normalizer=normalizer_t, **common,
    )
    srkl = fused_kd_loss(
        student_hidden_s, student_head, teacher_hidden_s, teacher_head, mask_s,
        divergence="skew_reverse_kl", alpha=alpha_s, stop_gradient_mixture=True, normalizer=normalizer_s, **common,
    )
    beta = jnp.asarray(beta, jnp.float32)
    return (1.0 - beta) * skl + beta * srkl


# ----------------------------------------------------------------------------- helpers


def _run(
    token_fn, hiddens, heads, layouts, vocab, weights, per_token, shared, chunk_size, memory_budget_bytes, softcaps
):
    """Flattens the token axes, picks the chunk and runs the chunked engine."""
    flat_hiddens = tuple(jnp.reshape(h, (-1, jnp.shape(h)[-1])) for h in hiddens)
    num_tokens = flat_hiddens[0].shape[0]
    if num_tokens == 0:
        return jnp.zeros((), jnp.float32)
    if chunk_size is None:
        chunk_size = fused_chunk_size(num_tokens, vocab, memory_budget_bytes=memory_budget_bytes)
    elif not (isinstance(chunk_size, numbers.Integral) and chunk_size >= 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}.")
    chunk_size = min(int(chunk_size), num_tokens)
    return fused_core.weighted_sum(
        token_fn, flat_hiddens, heads, layouts, vocab, jnp.reshape(weights, (-1,)), per_token, shared, chunk_size,
        softcaps,
    )


def _layouts(head_layout, name: str, count: int = 2) -> tuple[str, ...]:
    layouts = (head_layout,) * count if isinstance(head_layout, str) else tuple(head_layout)
    if len(layouts) != count or any(layout not in _LAYOUTS for layout in layouts):
        raise ValueError(
            f"{name}: head_layout must be 'dv' ([hidden, vocab]) or 'vd' ([vocab, hidden])"
            + (" or a (student, teacher) pair of them" if count == 2 else "")
            + f", got {head_layout!r}."
        )
    return layouts


def _softcaps(logit_softcap, name: str, count: int = 2) -> tuple[float | None, ...]:
    """One static soft-cap (a positive Python number, or None) per head."""
    caps = tuple(logit_softcap) if isinstance(logit_softcap, (tuple, list)) else (logit_softcap,) * count
    valid = len(caps) == count and all(
        cap is None or (isinstance(cap, numbers.Real) and not isinstance(cap, bool) and cap > 0) for cap in caps
    )
    if not valid:
        raise ValueError(
            f"{name}: logit_softcap must be None or a positive number"
            + (" (or a (student, teacher) pair of them)" if count == 2 else "")
            + f", got {logit_softcap!r}."
        )
    return tuple(None if cap is None else float(cap) for cap in caps)


def _check_pair(hidden, head, layout: str, role: str, name: str) -> tuple[int, ...]:
    """Checks one (hidden, head) pair; returns the token shape ``hidden.shape[:-1]``."""
    label = f"{role}_" if role else ""
    for arg, value in ((f"{label}hidden", hidden), (f"{label}head", head)):
        if not jnp.issubdtype(jnp.result_type(value), jnp.floating):
            raise TypeError(f"{name}: {arg} must be a floating-point array, got {jnp.result_type(value)}.")
    if jnp.ndim(head) != 2:
        raise ValueError(
            f"{name}: {label}head must be 2-D ([hidden, vocab] or [vocab, hidden]), got {jnp.shape(head)}."
        )
    if jnp.ndim(hidden) < 1:
        raise ValueError(f"{name}: {label}hidden must be [..., hidden], got a scalar.")
    head_dim = jnp.shape(head)[1 - fused_core.head_vocab_axis(layout)]
    if jnp.shape(hidden)[-1] != head_dim:
        other = "vd" if layout == "dv" else "dv"
        raise ValueError(
            f"{name}: {label}hidden has {jnp.shape(hidden)[-1]} features but {label}head {jnp.shape(head)} "
            f"in head_layout '{layout}' takes {head_dim}; is the head stored as '{other}'? "
            "('dv' = [hidden, vocab] as model.lm_head_weight(), 'vd' = [vocab, hidden] as an embedding table)."
        )
    return tuple(jnp.shape(hidden)[:-1])


def _shared_vocab(heads, layouts, vocab_size, name: str) -> int:
    sizes = [jnp.shape(h)[fused_core.head_vocab_axis(lay)] for h, lay in zip(heads, layouts)]
    if vocab_size is None:
        if len(set(sizes)) != 1:
            raise ValueError(
                f"{name}: the heads have different vocabulary sizes {sizes}. If one is only padded "
                "(e.g. Qwen2.5-7B's 152064 rows against 151936), pass vocab_size=<shared size>; "
                "different tokenizers need a cross-vocabulary method instead."
            )
        return int(sizes[0])
    if not (isinstance(vocab_size, numbers.Integral) and 1 <= vocab_size <= min(sizes)):
        raise ValueError(f"{name}: vocab_size={vocab_size!r} must be an integer in [1, {min(sizes)}] (heads: {sizes}).")
    return int(vocab_size)


def _reduction_weights(mask, token_shape, reduction: str, normalizer, name: str) -> Array:
    """Per-token weights ``w`` with ``sum_i w_i l_i`` equal to the reduction of ``l``."""
    if jnp.shape(mask) != token_shape:
        raise ValueError(
            f"{name}: mask {jnp.shape(mask)} must have the token shape {token_shape} of the hidden states."
        )
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
    selected = jnp.asarray(mask).astype(bool)
    weights = jnp.where(selected, jnp.asarray(mask).astype(jnp.float32), 0.0)
    if reduction == "sequence":
        if len(token_shape) < 1:
            raise ValueError(f"{name}: the sequence reduction needs a time axis.")
        per_seq = jnp.sum(weights, axis=-1, keepdims=True)
        has_tokens = per_seq > 0
        weights = jnp.where(has_tokens, weights / jnp.where(has_tokens, per_seq, 1.0), 0.0)
        count = jnp.sum(has_tokens.astype(jnp.float32))
    else:
        count = jnp.sum(weights)
    if normalizer is not None:
        count = jnp.asarray(normalizer, jnp.float32)
    return jnp.where(count > 0, weights / jnp.where(count > 0, count, 1.0), 0.0)


def _split_kwargs(kwargs: dict[str, Any], token_shape: tuple[int, ...], name: str):
    """Sorts kernel arguments into static values, per-token arrays and shared arrays."""
    static, per_token, shared = {}, {}, {}
    num_tokens = int(np.prod(token_shape, dtype=np.int64))
    for key, value in kwargs.items():
        if value is None or isinstance(value, (numbers.Number, str, np.bool_)):
            static[key] = value
        elif key == "where" or jnp.ndim(value) == 0:
            shared[key] = jnp.asarray(value)
        else:
            arr = jnp.asarray(value)
            if arr.ndim > len(token_shape) or tuple(arr.shape) != token_shape[: arr.ndim]:
                raise ValueError(
                    f"{name}: {key} of shape {arr.shape} must be a scalar or match the leading token axes "
                    f"{token_shape} (e.g. one value per sequence)."
                )
            arr = jnp.broadcast_to(arr.reshape(arr.shape + (1,) * (len(token_shape) - arr.ndim)), token_shape)
            per_token[key] = arr.reshape((num_tokens,))
    return static, per_token, shared
