"""Decode throughput of ``jdistill.sampling.generate`` against transformers ``generate``.

Both run the same random GPT-2-architecture weights (built with transformers,
saved as safetensors, loaded by jdistill) on a batch of 16 unpadded 32-token
prompts and produce 128 new tokens per row (no EOS, so every row runs to the
end). Two shapes:

* ``tiny``: 2 layers, hidden 64, 4 heads, vocabulary 256 (per-step overhead
  dominates);
* ``gpt2-small``: 12 layers, hidden 768, 12 heads, vocabulary 50257
  (compute-bound on a CPU).

Timings are the best of ``--repeats`` runs after one warm-up run (which
includes compilation for jdistill; its compile time is reported separately).

    python benchmarks/sampling.py                          # both shapes, greedy
    python benchmarks/sampling.py --shapes tiny --mode sample --repeats 5
    python benchmarks/sampling.py --skip-transformers       # jdistill only (GPU)

Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import jax
import numpy as np

import jdistill.models as jm
from jdistill import sampling

SHAPES = {
    "tiny": dict(n_layer=2, n_embd=64, n_head=4, vocab_size=256),
    "gpt2-small": dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257),
}
# Sampling settings per mode: (jdistill kwargs, transformers kwargs).
MODES = {
    "greedy": ({"temperature": 0.0}, {"do_sample": False}),
    "sample": (
        {"temperature": 1.0, "top_k": 50, "top_p": 0.9},
        {"do_sample": True, "temperature": 1.0, "top_k": 50, "top_p": 0.9},
    ),
}


def build_checkpoint(shape: str, directory: str):
    """Saves random GPT-2 weights of ``shape``; returns the torch model."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_positions=1024, bos_token_id=0, eos_token_id=0, **SHAPES[shape])
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(directory)
    return model


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_transformers(model, prompt_ids, new_tokens, mode, repeats):
    import torch

    ids = torch.tensor(prompt_ids, dtype=torch.long)
    kwargs = dict(
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        pad_token_id=0,
        **MODES[mode][1],
    )

    def run():
        with torch.no_grad():
            out = model.generate(ids, **kwargs)
        assert out.shape[1] == ids.shape[1] + new_tokens

    run()
    return best_time(run, repeats)


def bench_jdistill(directory, prompt_ids, new_tokens, mode, repeats):
    model = jm.load_pretrained(directory)
    kwargs = dict(max_new_tokens=new_tokens, eos_ids=(), **MODES[mode][0])
    calls = iter(range(10**6))

    def run():
        out = sampling.generate(model, prompt_ids, key=jax.random.key(next(calls)), **kwargs)
        lengths = np.asarray(out.lengths)  # Blocks until the tokens are on the host.
        assert (lengths == new_tokens).all()

    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    best = best_time(run, repeats)
    return best, first - best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--mode", default="greedy", choices=list(MODES))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument(
        "--torch-threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)"
    )
    args = parser.parse_args()
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)

    device = jax.devices()[0]
    print(
        f"device: {device.device_kind} x{jax.device_count()} "
        f"({platform.processor() or platform.machine()}), jax {jax.__version__}; "
        f"batch {args.batch}, {args.prompt_len}-token prompts, {args.new_tokens} new tokens, "
        f"{args.mode}"
    )
    print()
    print("| shape | transformers tok/s | jdistill tok/s | speed-up | jdistill compile s |")
    print("|---|---|---|---|---|")
    for shape in args.shapes:
        rng = np.random.default_rng(0)
        prompts = rng.integers(1, SHAPES[shape]["vocab_size"], (args.batch, args.prompt_len))
        tokens = args.batch * args.new_tokens
        with tempfile.TemporaryDirectory() as directory:
            torch_model = build_checkpoint(shape, directory)
            hf_rate = None
            if not args.skip_transformers:
                hf_time = bench_transformers(
                    torch_model, prompts, args.new_tokens, args.mode, args.repeats
                )
                hf_rate = tokens / hf_time
            del torch_model
            jd_time, compile_s = bench_jdistill(
                directory, prompts, args.new_tokens, args.mode, args.repeats
            )
        jd_rate = tokens / jd_time
        hf_text = "-" if hf_rate is None else f"{hf_rate:,.0f}"
        ratio = "-" if hf_rate is None else f"{jd_rate / hf_rate:.1f}x"
        print(f"| {shape} | {hf_text} | {jd_rate:,.0f} | {ratio} | {compile_s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
