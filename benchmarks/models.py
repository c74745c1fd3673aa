"""Forward-pass throughput: jdistill (jitted JAX) vs transformers (PyTorch eager).

Both run the same weights: a randomly initialised transformers model is saved
with ``save_pretrained`` and loaded by ``jdistill.models.load_pretrained`` and
by ``AutoModelForCausalLM.from_pretrained``. Each measures full forward passes
(logits included) on a batch of ``batch x seq_len`` tokens in float32 and
reports tokens per second (median of ``--repeats`` timed runs after a warm-up
run; the jdistill compile time is measured separately). The two
frameworks' runs are interleaved so that background load affects both alike.

Usage::

    python benchmarks/models.py                      # tiny and gpt2-small
    python benchmarks/models.py --shapes tiny --repeats 3

Prints a markdown table for ``docs/benchmarks.md``. Needs torch (the test
extra).
"""

import argparse
import functools
import os
import platform
import statistics
import tempfile
import time

import jax
import numpy as np
import torch
import transformers
from flax import nnx

import jdistill.models as jm

# Benchmark shapes: transformers configs built with random weights.
SHAPES = {
    "tiny": lambda: transformers.GPT2Config(
        vocab_size=512,
        n_embd=128,
        n_layer=2,
        n_head=4,
        n_positions=256,
        bos_token_id=0,
        eos_token_id=0,
    ),
    "gpt2-small": lambda: transformers.GPT2Config(
        vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_positions=1024
    ),
    "llama-tiny": lambda: transformers.LlamaConfig(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=344,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
}


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@functools.partial(jax.jit, static_argnums=(0,))
def _jdistill_logits(graphdef, state, ids, mask):
    return nnx.merge(graphdef, state)(ids, attention_mask=mask).logits


def bench_shape(name: str, batch: int, seq_len: int, repeats: int) -> dict:
    """Times one shape in both frameworks; returns a result row."""
    torch.manual_seed(0)
    hf_model = transformers.AutoModelForCausalLM.from_config(SHAPES[name]()).eval()
    params = sum(p.numel() for p in hf_model.parameters())
    rng = np.random.RandomState(0)
    ids = rng.randint(0, hf_model.config.vocab_size, size=(batch, seq_len)).astype(np.int32)
    mask = np.ones_like(ids)

    with tempfile.TemporaryDirectory() as directory:
        hf_model.save_pretrained(directory)
        del hf_model
        torch_model = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
        model = jm.load_pretrained(directory)

    graphdef, state = nnx.split(model)
    ids_jax, mask_jax = jax.device_put(ids), jax.device_put(mask)
    start = time.perf_counter()
    _jdistill_logits.lower(graphdef, state, ids_jax, mask_jax).compile()
    compile_seconds = time.perf_counter() - start
    _jdistill_logits(graphdef, state, ids_jax, mask_jax).block_until_ready()  # warm-up

    ids_torch = torch.tensor(ids, dtype=torch.long)
    mask_torch = torch.tensor(mask, dtype=torch.long)

    def torch_forward():
        with torch.no_grad():
            return torch_model(ids_torch, attention_mask=mask_torch).logits

    torch_forward()  # warm-up
    # Interleaved, so that both frameworks see the same background load.
    jax_times, torch_times = [], []
    for _ in range(repeats):
        jax_times.append(
            _seconds(
                lambda: _jdistill_logits(graphdef, state, ids_jax, mask_jax).block_until_ready()
            )
        )
        torch_times.append(_seconds(torch_forward))

    tokens = batch * seq_len
    jax_tps = tokens / statistics.median(jax_times)
    torch_tps = tokens / statistics.median(torch_times)
    return {
        "shape": name,
        "params": params,
        "attn": torch_model.config._attn_implementation,
        "jdistill": jax_tps,
        "torch": torch_tps,
        "compile_s": compile_seconds,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["tiny", "gpt2-small"], choices=SHAPES)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's choice, one per core). On a "
        "loaded machine OpenMP threads contend; 1 thread can be faster.",
    )
    args = parser.parse_args()
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)

    rows = [bench_shape(name, args.batch, args.seq_len, args.repeats) for name in args.shapes]
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores; "
        f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), "
        f"transformers {transformers.__version__}. Batch {args.batch} x {args.seq_len} tokens, "
        f"float32, median of {args.repeats} runs; load average "
        f"{os.getloadavg()[0]:.1f} at the end.\n"
    )
    print("| shape | params | jdistill tok/s | transformers tok/s | ratio | jdistill compile (s) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['shape']} | {row['params'] / 1e6:.1f}M | {row['jdistill']:,.0f} | "
            f"{row['torch']:,.0f} ({row['attn']}) | {row['jdistill'] / row['torch']:.2f}x | "
            f"{row['compile_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
