"""Temporary memory of a compiled forward + backward pass: dense vs chunked attention.

A GPT-2-small-width decoder (width 768, 12 heads of 64, MLP 3072, learned
positions, vocabulary 50257) with ``return_logits=False`` and the loss
``sum(hidden_states ** 2)`` -- so that no ``[T, V]`` logits enter the
figure -- is differentiated with respect to all its parameters at batch 1 and
``T`` tokens (right-padded batch mask given, so the padding/segment path is
the one measured). The figure is XLA's
``jax.jit(...).lower(...).compile().memory_analysis().temp_size_in_bytes``:
deterministic, no run needed (the programs are only compiled).

Usage::

    python benchmarks/attention_memory.py                    # 1 and 12 layers, T = 1k..8k
    python benchmarks/attention_memory.py --layers 1 --lengths 1024,2048

Prints a markdown table for ``docs/benchmarks.md``.
"""

import argparse
import os
import platform

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jdistill.models as jm

MiB = 2**20


def gpt2_small_width(num_layers: int, impl: str, max_len: int) -> jm.DecoderConfig:
    return jm.DecoderConfig(
        model_type="gpt2",
        vocab_size=50257,
        hidden_size=768,
        num_layers=num_layers,
        num_heads=12,
        num_kv_heads=12,
        head_dim=64,
        mlp_dim=3072,
        norm_type="layer",
        norm_eps=1e-5,
        activation="gelu_new",
        gated_mlp=False,
        position_embedding="learned",
        max_position_embeddings=max_len,
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        tie_word_embeddings=True,
        attention_impl=impl,
    )


def temp_bytes(num_layers: int, impl: str, length: int) -> int:
    config = gpt2_small_width(num_layers, impl, max_len=max(length, 1024))
    graphdef, state = nnx.split(nnx.eval_shape(lambda: jm.Decoder(config, rngs=nnx.Rngs(0))))
    ids = jax.ShapeDtypeStruct((1, length), jnp.int32)
    mask = jax.ShapeDtypeStruct((1, length), jnp.int32)

    def loss(state, ids, mask):
        out = nnx.merge(graphdef, state)(ids, mask, return_logits=False)
        return jnp.sum(out.hidden_states.astype(jnp.float32) ** 2)

    compiled = jax.jit(jax.grad(loss)).lower(state, ids, mask).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", default="1,12", help="comma-separated layer counts")
    parser.add_argument("--lengths", default="1024,2048,4096,8192", help="comma-separated T")
    parser.add_argument("--impls", default="reference,xla_chunked", help="comma-separated attention_impl values")
    args = parser.parse_args()
    layers = [int(x) for x in args.layers.split(",")]
    lengths = [int(x) for x in args.lengths.split(",")]
    impls = args.impls.split(",")

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__} ({jax.default_backend()})")
    header = "| layers | T | " + " | ".join(f"{i} temp (MiB)" for i in impls)
    header += " | " + " | ".join(f"{i} x per 2x T" for i in impls) + " |"
    print(header)
    print("|" + "---:|" * (2 + 2 * len(impls)))
    for num_layers in layers:
        previous = {}
        for length in lengths:
            sizes = {impl: temp_bytes(num_layers, impl, length) for impl in impls}
            growth = [
                f"{sizes[i] / previous[i]:.2f}" if i in previous and previous[i] else "" for i in impls
            ]
            row = [str(num_layers), f"{length:,}", *(f"{sizes[i] / MiB:,.0f}" for i in impls), *growth]
            print("| " + " | ".join(row) + " |", flush=True)
            previous = sizes


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
