"""Memory and speed of the loss kernels: the logits path, and the fused path against it.

For each kernel: the compiled temporary memory of ``value_and_grad`` (from
``jax.jit(...).lower(...).compile().memory_analysis()``, deterministic) and its
wall time.

* Default mode: the logits-based kernels on given ``[tokens, V]`` logits, at
  4096 tokens x 32768 vocabulary by default.
* ``--fused``: from hidden states and heads (student and teacher hidden 1024,
  8192 tokens, V = 32768 and 151936 by default), the logits path
  ``token_mean(D(h_s W_s, h_t W_t))`` against ``fused_kd_loss`` (and ``cald``
  against ``fused_cald``), gradients w.r.t. the student hidden states and head
  (the teacher is frozen). Memory is reported for every kernel (compiling
  only); times for the ``--time`` kernels, and for the logits path only where
  its temporaries stay under ``--max-logits-gib``.

    python benchmarks/losses.py                      # defaults
    python benchmarks/losses.py --tokens 1024 --vocab 8192 --repeats 3
    python benchmarks/losses.py --fused --repeats 1  # the fused-vs-logits table
    python benchmarks/losses.py --fused --tokens 1024 --hidden 256 --vocab 8192 --time forward_kl

Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import functools
import platform
import time

import jax
import jax.numpy as jnp

from jdistill import losses
from jdistill.losses import fused as fused_losses


def _kernels(tokens: int):
    alpha_per_seq = jnp.full((tokens,), 0.1)
    half = tokens // 2

    def cald_loss(s, t, mask):
        # Half the rows are teacher responses, half student responses.
        return losses.cald(s[:half], t[:half], mask[:half], s[half:], t[half:], mask[half:], beta=0.7)

    divergence_kwargs = {
        "generalized_jsd": {"beta": 0.5},
        "skew_forward_kl": {"alpha": alpha_per_seq},
        "skew_reverse_kl": {"alpha": alpha_per_seq, "stop_gradient_mixture": True},
        "adaptive_kl": {"mu": 0.5},
    }
    table = {}
    for name, kernel in losses.DIVERGENCES.items():
        kernel = functools.partial(kernel, **divergence_kwargs.get(name, {}))
        table[name] = lambda s, t, mask, k=kernel: losses.token_mean(k(s, t), mask)
    table["cald"] = cald_loss
    return table


def measure(name, loss_fn, student, teacher, mask, repeats):
    step = jax.jit(jax.value_and_grad(loss_fn))
    compiled = step.lower(student, teacher, mask).compile()
    memory = compiled.memory_analysis()
    temp_bytes = getattr(memory, "temp_size_in_bytes", None) if memory is not None else None
    value, grad = compiled(student, teacher, mask)
    jax.block_until_ready(grad)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(student, teacher, mask))
        times.append(time.perf_counter() - start)
    return temp_bytes, min(times), float(value)


# ----------------------------------------------------------------------------- --fused


def _fused_pairs(tokens: int):
    """kernel name -> (logits-path loss, fused loss), both ``f(h_s, W_s, h_t, W_t, mask)``."""
    alpha = jnp.full((tokens,), 0.1)
    half = tokens // 2
    divergence_kwargs = {
        "generalized_jsd": {"beta": 0.5},
        "skew_forward_kl": {"alpha": alpha},
        "skew_reverse_kl": {"alpha": alpha, "stop_gradient_mixture": True},
        "adaptive_kl": {"mu": 0.5},
    }
    pairs = {}
    for name, kernel in losses.DIVERGENCES.items():
        kw = divergence_kwargs.get(name, {})

        def logits_path(hs, ws, ht, wt, mask, kernel=kernel, kw=kw):
            return losses.token_mean(kernel(hs @ ws, ht @ wt, **kw), mask)

        def fused_path(hs, ws, ht, wt, mask, name=name, kw=kw):
            return losses.fused_kd_loss(hs, ws, ht, wt, mask, divergence=name, **kw)

        pairs[name] = (logits_path, fused_path)

    def cald_logits(hs, ws, ht, wt, mask):
        zs, zt = hs @ ws, ht @ wt
        return losses.cald(zs[:half, None], zt[:half, None], mask[:half, None], zs[half:, None], zt[half:, None],
                           mask[half:, None], beta=0.7)

    def cald_fused(hs, ws, ht, wt, mask):
        return losses.fused_cald(hs[:half, None], ht[:half, None], mask[:half, None], hs[half:, None],
                                 ht[half:, None], mask[half:, None], ws, wt, beta=0.7)

    pairs["cald"] = (cald_logits, cald_fused)
    return pairs


def _compile(loss_fn, args):
    """Compiled value-and-grad w.r.t. the student hidden states and head, and its temp bytes."""
    compiled = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1))).lower(*args).compile()
    memory = compiled.memory_analysis()
    return compiled, getattr(memory, "temp_size_in_bytes", None) if memory is not None else None


def _time(compiled, args, repeats):
    times = []
    for _ in range(repeats):  # compiled ahead of time, so no warm-up call is needed
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def _mib(num_bytes):
    return "n/a" if num_bytes is None else f"{num_bytes / 2**20:,.0f}"


def fused_main(args):
    tokens, hidden = args.tokens, args.hidden
    vocabs = args.vocab or [32768, 151936]
    print(f"{tokens} tokens, student and teacher hidden {hidden}, float32; value_and_grad w.r.t. the student "
          f"hidden states and head (teacher frozen); fused chunk from the default budget "
          f"({fused_losses.DEFAULT_MEMORY_BUDGET_BYTES / 2**20:.0f} MiB); times: best of {args.repeats}\n")
    print("| V | kernel | logits temp (MiB) | fused temp (MiB) | fused memory | chunk | logits time (s) "
          "| fused time (s) | time ratio |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for vocab in vocabs:
        specs = tuple(jax.ShapeDtypeStruct(shape, jnp.float32) for shape in
                      ((tokens, hidden), (hidden, vocab), (tokens, hidden), (hidden, vocab)))
        specs += (jax.ShapeDtypeStruct((tokens,), jnp.bool_),)
        chunk = losses.fused_chunk_size(tokens, vocab)
        arrays = None
        for name, (logits_fn, fused_fn) in _fused_pairs(tokens).items():
            if args.only and name not in args.only:
                continue
            logits_compiled, logits_temp = _compile(logits_fn, specs)
            fused_compiled, fused_temp = _compile(fused_fn, specs)
            ratio = "n/a" if None in (logits_temp, fused_temp) else f"{logits_temp / fused_temp:.1f}x less"
            logits_s = fused_s = time_ratio = ""
            if name in args.time:
                if arrays is None:
                    k = jax.random.split(jax.random.key(vocab), 4)
                    head_scale = 2.0 / hidden**0.5  # logits of standard deviation 2
                    arrays = (
                        jax.random.normal(k[0], (tokens, hidden)),
                        head_scale * jax.random.normal(k[1], (hidden, vocab)),
                        jax.random.normal(k[2], (tokens, hidden)),
                        head_scale * jax.random.normal(k[3], (hidden, vocab)),
                        jnp.ones((tokens,), bool),
                    )
                fused_seconds = _time(fused_compiled, arrays, args.repeats)
                fused_s = f"{fused_seconds:.1f}"
                if logits_temp is not None and logits_temp <= args.max_logits_gib * 2**30:
                    logits_seconds = _time(logits_compiled, arrays, args.repeats)
                    logits_s, time_ratio = f"{logits_seconds:.1f}", f"{fused_seconds / logits_seconds:.2f}"
                else:
                    logits_s = "does not fit"
            del logits_compiled, fused_compiled
            print(f"| {vocab} | {name} | {_mib(logits_temp)} | {_mib(fused_temp)} | {ratio} | {chunk} "
                  f"| {logits_s} | {fused_s} | {time_ratio} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, help="number of tokens (default 4096; --fused: 8192)")
    parser.add_argument("--vocab", type=int, nargs="+",
                        help="vocabulary size(s) (default 32768; --fused: 32768 151936)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--only", nargs="*", help="kernel names to run (default: all)")
    parser.add_argument("--fused", action="store_true", help="fused path against the logits path, from hidden states")
    parser.add_argument("--hidden", type=int, default=1024, help="--fused: hidden size of both models")
    parser.add_argument("--time", nargs="*", default=["forward_kl"], help="--fused: kernels to time")
    parser.add_argument("--max-logits-gib", type=float, default=10.0,
                        help="--fused: time the logits path only if its temporaries fit in this many GiB")
    args = parser.parse_args()
    device = jax.devices()[0]
    print(f"device: {device.device_kind} x{jax.device_count()} ({platform.processor() or platform.machine()}), "
          f"jax {jax.__version__}")
    if args.fused:
        args.tokens = args.tokens or 8192
        return fused_main(args)
    if args.vocab and len(args.vocab) > 1:
        parser.error("the logits table takes one --vocab")
    args.vocab = args.vocab[0] if args.vocab else 32768
    args.tokens = args.tokens or 4096

    dtype = jnp.dtype(args.dtype)
    k1, k2 = jax.random.split(jax.random.key(0))
    student = (3.0 * jax.random.normal(k1, (args.tokens, args.vocab))).astype(dtype)
    teacher = (3.0 * jax.random.normal(k2, (args.tokens, args.vocab))).astype(dtype)
    mask = jnp.ones((args.tokens,), bool)
    logits_mib = args.tokens * args.vocab * 4 / 2**20
    print(f"{args.tokens} tokens x {args.vocab} vocabulary, {args.dtype} logits; "
          f"one float32 [tokens, V] buffer = {logits_mib:.0f} MiB\n")
    print("| kernel | temp memory (MiB) | in [tokens, V] fp32 buffers | value+grad time (ms) |")
    print("|---|---:|---:|---:|")
    for name, fn in _kernels(args.tokens).items():
        if args.only and name not in args.only:
            continue
        temp, seconds, _ = measure(name, fn, student, teacher, mask, args.repeats)
        temp_mib = "n/a" if temp is None else f"{temp / 2**20:.0f}"
        buffers = "n/a" if temp is None else f"{temp / 2**20 / logits_mib:.1f}"
        print(f"| {name} | {temp_mib} | {buffers} | {seconds * 1e3:.0f} |", flush=True)


if __name__ == "__main__":
    main()
