"""The DSKD paper's quality table in miniature, on the embedded demo.

Trains every method's config (same vocabulary: SFT, KD with forward KL, DSKD;
across vocabularies, with the demo's tokenizer-B teacher: SeqKD, ULD, MinED,
exact token alignment, DSKD-CMA — those whose config exists) for several seeds
and reports held-out ROUGE-L and exact match as mean ± std, next to the
paper's ordering (DSKD > KD > SFT; DSKD-CMA > MinED ≈ ULD > SeqKD).

    python benchmarks/quality.py                        # 3 seeds, the configs' own steps
    python benchmarks/quality.py --seeds 0 --steps 100  # a quick look

Writes docs/results.md (``--out``) and keeps every run under ``--workdir``.
Slow on a CPU: each run trains the demo student for the config's steps; the
demo teachers are trained once on first use and cached.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (row label, config file, group). Rows whose config file does not exist are left out.
ROWS = (
    ("SFT", "sft", "same vocabulary"),
    ("KD (forward KL)", "kd", "same vocabulary"),
    ("DSKD", "dskd", "same vocabulary"),
    ("SeqKD", "seqkd", "different vocabularies"),
    ("ULD", "uld", "different vocabularies"),
    ("MinED", "mined", "different vocabularies"),
    ("Exact token alignment", "eta", "different vocabularies"),
    ("DSKD-CMA", "dskd_cma", "different vocabularies"),
)
PAPER_ORDER = {
    "same vocabulary": "DSKD > KD > SFT",
    "different vocabularies": "DSKD-CMA > MinED ≈ ULD > SeqKD",
}


def load_config(name: str):
    path = os.path.join(REPO, "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def run_one(name: str, seed: int, steps: int, workdir: str) -> dict:
    from jdistill.engine import trainer

    config = load_config(name)
    config.train.seed = seed
    if steps:
        config.train.steps = steps
    config.train.checkpoint_every = 0
    config.eval.every = 0
    config.train.export_hf = False
    config.logging.progress_bar = False
    config.logging.tensorboard = False
    start = time.time()
    result = trainer.run(config, workdir)
    final = result.final_eval
    return {"rougeL": float(final["rougeL"]), "exact_match": float(final["exact_match"]),
            "seconds": time.time() - start}


def mean_std(values) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {std:.2f}"


def measured_order(rows, results, group) -> str:
    """Labels of ``group`` sorted by mean ROUGE-L, best first."""
    present = [(label, name) for label, name, g in rows if g == group and name in results]
    ranked = sorted(present, key=lambda row: -statistics.fmean(r["rougeL"] for r in results[row[1]]))
    return " > ".join(label for label, _ in ranked)


def write_markdown(path, rows, results, seeds, steps):
    lines = [
        "# Quality on the demo (the DSKD paper's table in miniature)",
        "",
        f"Measured by `python benchmarks/quality.py` ({len(seeds)} seeds: {', '.join(map(str, seeds))}; "
        f"{'config steps' if not steps else f'{steps} steps'}; greedy decoding on the demo's held-out split; "
        f"{platform.machine()} CPU). ROUGE-L (F, ×100) and exact match (%) are mean ± std over seeds.",
        "",
        "| group | method | ROUGE-L | exact match |",
        "|---|---|---|---|",
    ]
    for label, name, group in rows:
        if name in results:
            r = results[name]
            lines.append(f"| {group} | {label} | {mean_std([x['rougeL'] for x in r])} | "
                         f"{mean_std([x['exact_match'] for x in r])} |")
    lines += ["", "| group | paper's ordering | measured ordering (ROUGE-L) |", "|---|---|---|"]
    for group, order in PAPER_ORDER.items():
        lines.append(f"| {group} | {order} | {measured_order(rows, results, group)} |")
    lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--steps", type=int, default=0, help="training steps per run; 0 = the config's")
    parser.add_argument("--methods", default="", help="comma-separated config names; empty = all that exist")
    parser.add_argument("--workdir", default="workdirs/quality")
    parser.add_argument("--out", default=os.path.join(REPO, "docs", "results.md"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    wanted = {m for m in args.methods.split(",") if m}
    rows = [r for r in ROWS if os.path.exists(os.path.join(REPO, "configs", f"{r[1]}.py"))
            and (not wanted or r[1] in wanted)]
    results: dict[str, list] = {}
    for label, name, _ in rows:
        for seed in seeds:
            workdir = os.path.join(args.workdir, name, f"seed{seed}")
            record = run_one(name, seed, args.steps, workdir)
            results.setdefault(name, []).append(record)
            print(json.dumps({"method": name, "seed": seed, **record}), flush=True)
    write_markdown(args.out, rows, results, seeds, args.steps)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
