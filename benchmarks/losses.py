"""Memory and speed of the logits-based loss kernels (the baseline for fused kernels).

For each kernel: the compiled temporary memory of ``value_and_grad`` (from
``jax.jit(...).lower(...).compile().memory_analysis()``, deterministic) and its
wall time, at 4096 tokens x 32768 vocabulary by default.

    python benchmarks/losses.py                      # defaults
    python benchmarks/losses.py --tokens 1024 --vocab 8192 --repeats 3

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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--only", nargs="*", help="kernel names to run (default: all)")
    args = parser.parse_args()

    dtype = jnp.dtype(args.dtype)
    k1, k2 = jax.random.split(jax.random.key(0))
    student = (3.0 * jax.random.normal(k1, (args.tokens, args.vocab))).astype(dtype)
    teacher = (3.0 * jax.random.normal(k2, (args.tokens, args.vocab))).astype(dtype)
    mask = jnp.ones((args.tokens,), bool)
    logits_mib = args.tokens * args.vocab * 4 / 2**20

    device = jax.devices()[0]
    print(f"device: {device.device_kind} x{jax.device_count()} ({platform.processor() or platform.machine()}), "
          f"jax {jax.__version__}")
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
