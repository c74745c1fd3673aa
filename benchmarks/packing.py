"""Sequence packing: padding fraction before/after, and the demo KD step's tokens/s packed vs unpacked.

    python benchmarks/packing.py                   # padding (demo + Dolly-shaped) and tokens/s
    python benchmarks/packing.py --no-timing       # padding fractions only (seconds)

* Demo: the built-in demo's train split, tokenized as ``configs/kd.py`` does
  (64-token sequences, 32-token prompts, batches of 32, buckets 32/64); epoch 0.
* Dolly-shaped: synthetic example lengths, prompt and response each
  log-normal (medians and sigmas below, roughly databricks-dolly-15k under a
  GPT-2 tokenizer: short instructions with a long tail of contexts, responses
  of a few dozen to several hundred tokens), cut like the data pipeline cuts
  (prompt ``<= 256``, total ``<= 512``), batches of 32, power-of-two buckets
  32..512 (``configs/kd.py:real``).
* Tokens/s: the demo KD step (``configs/kd.py``, teacher and student of the
  demo) through the trainer's own setup and jitted step, with
  ``data.packing`` off and on, on the same epoch-0 batches, every shape
  compiled first, the two timed in alternating rounds; tokens = real
  (non-padding) tokens. Report the median of the rounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np

DOLLY = dict(prompt_median=40, prompt_sigma=1.0, response_median=60, response_sigma=1.1, max_prompt=256, max_len=512,
             batch_size=32, examples=15000, seed=0)


def dolly_lengths(p=DOLLY) -> list[int]:
    rng = np.random.default_rng(p["seed"])
    prompt = np.exp(rng.normal(np.log(p["prompt_median"]), p["prompt_sigma"], p["examples"]))
    response = np.exp(rng.normal(np.log(p["response_median"]), p["response_sigma"], p["examples"]))
    prompt = np.clip(np.round(prompt), 1, p["max_prompt"]).astype(int)
    response = np.maximum(np.round(response), 1).astype(int) + 1  # + EOS
    return [int(min(a + b, p["max_len"])) for a, b in zip(prompt, response)]


def demo_config(packing: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location("kd_config", os.path.join(os.path.dirname(__file__), "..", "configs",
                                                                            "kd.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from jdistill import demo

    config = demo.resolved(module.get_config())  # the demo's local paths
    config.data.packing = packing
    config.logging.progress_bar = False
    return config


def padding_rows():
    from jdistill.data import batching, packing

    rows = []
    lengths = dolly_lengths()
    buckets = batching.default_buckets(DOLLY["max_len"])
    before = packing.padding_fraction(lengths, batch_size=DOLLY["batch_size"], buckets=buckets, packed=False)
    after = packing.padding_fraction(lengths, batch_size=DOLLY["batch_size"], buckets=buckets, packed=True)
    rows.append(("Dolly-shaped (synthetic, 15,000 examples)", float(np.mean(lengths)), before, after))
    return rows


def demo_setup(packing: str, workdir: str):
    from jdistill.engine import trainer

    config = demo_config(packing)
    return trainer.setup(config, workdir)


def time_demo(rounds: int, batches: int):
    import jax

    from jdistill.data.batching import DataPosition
    from jdistill.engine import trainer

    runs, host, tokens, slots = {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as root:
        for mode in ("off", "on"):
            run = demo_setup(mode, os.path.join(root, mode))
            runs[mode] = run
            host[mode] = [trainer._put_batch(run.data.train.batch_at(DataPosition(0, i)), run.mesh)
                          for i in range(batches)]
            tokens[mode] = sum(int(b["attention_mask"].sum()) for b in host[mode])
            slots[mode] = sum(int(b["attention_mask"].size) for b in host[mode])
        demo_padding = (runs["off"].data.train.padding_fraction(packed=False),
                        runs["on"].data.train.padding_fraction(packed=True))

        def one_pass(mode):
            run = runs[mode]
            for batch in host[mode]:
                run.state, metrics = trainer._step_fn(run, batch)(run.state, run.teacher_params, batch)
            jax.block_until_ready(metrics["loss"])

        for mode in runs:  # compile every shape
            one_pass(mode)
        seconds = {mode: [] for mode in runs}
        for _ in range(rounds):
            for mode in runs:
                start = time.perf_counter()
                one_pass(mode)
                seconds[mode].append(time.perf_counter() - start)
        for run in runs.values():
            trainer.abort(run)  # releases the workdir lock
    return demo_padding, tokens, slots, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=8, help="epoch-0 batches per timed round")
    args = parser.parse_args()
    import jax

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {jax.devices()[0].device_kind}; jax {jax.__version__}")
    print(f"Dolly-shaped lengths: {DOLLY}\n")
    rows = padding_rows()
    if not args.no_timing:
        demo_padding, tokens, slots, seconds = time_demo(args.rounds, args.batches)
        rows.insert(0, ("demo train split (configs/kd.py)", None, *demo_padding))
    print("| data | mean length | padding, unpacked | padding, packed |")
    print("|---|---:|---:|---:|")
    for name, mean, before, after in rows:
        print(f"| {name} | {'' if mean is None else f'{mean:.0f}'} | {100 * before:.1f}% | {100 * after:.1f}% |")
    if not args.no_timing:
        print("\n| demo KD step | batches | real tokens | padded slots | median s / pass | tokens/s | per-round s |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for mode in ("off", "on"):
            median = float(np.median(seconds[mode]))
            print(f"| data.packing={mode} | {args.batches} | {tokens[mode]} | {slots[mode]} | {median:.3f} | "
                  f"{tokens[mode] / median:,.0f} | {', '.join(f'{s:.2f}' for s in seconds[mode])} |")
        speed = np.median(seconds["off"]) / np.median(seconds["on"])
        print(f"\npacked / unpacked tokens/s: {speed:.2f}x")


if __name__ == "__main__":
    main()
