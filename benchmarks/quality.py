"""The papers' quality tables in miniature, on the embedded demo.

Trains each row's config for several seeds and reports held-out ROUGE-L and
exact match as mean ± std, group by group, next to the paper's ordering:

* DSKD, same vocabulary: SFT, KD (forward KL), DSKD (DSKD > KD > SFT);
* DSKD, different vocabularies (the demo's tokenizer-B teacher): SeqKD, ULD,
  MinED, exact token alignment, DSKD-CMA (DSKD-CMA > MinED ≈ ULD > SeqKD);
* DistiLLM-2's family: SFT, KD, SeqKD, GKD, ImitKD, DistiLLM, DistiLLM-2 and
  its two curriculum ablations (DistiLLM-2 ≥ DistiLLM > GKD);
* feature, relation, online, self-distillation and offline top-k KD beside
  SFT and KD.

    python benchmarks/quality.py                          # every row, 3 seeds, the configs' own steps
    python benchmarks/quality.py --rows sft,kd,dskd --seeds 0 --steps 100   # a quick look

Finished runs are appended to ``<workdir>/runs.jsonl`` and skipped when the
script is run again, so the grid can be filled over several sittings;
docs/results.md (``--out``) is rewritten from every finished run each time;
its hand-written analysis, from the ``## Reading the numbers`` heading on, is
kept as it is.
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

# Each row: (key, label, config file, overrides). Rows whose config file does not exist are left out.
ROWS = {
    "sft": ("SFT", "sft", {}),
    "kd": ("KD (forward KL)", "kd", {}),
    "dskd": ("DSKD", "dskd", {}),
    "seqkd": ("SeqKD", "seqkd", {}),
    "seqkd_b": ("SeqKD (teacher B)", "seqkd", {"teacher.path": "demo:teacher_b"}),
    "uld": ("ULD", "uld", {}),
    "mined": ("MinED", "mined", {}),
    "eta": ("Exact token alignment", "eta", {}),
    "dskd_cma": ("DSKD-CMA", "dskd_cma", {}),
    "gkd": ("GKD", "gkd", {}),
    "imitkd": ("ImitKD", "imitkd", {}),
    # DistiLLM's off-policy probability phi moves at its per-epoch evaluations (the config's eval.every = -1).
    "distillm": ("DistiLLM", "distillm", {}),
    "distillm2": ("DistiLLM-2", "distillm2", {}),
    "distillm2_no_alpha": ("DistiLLM-2 without the α curriculum", "distillm2", {"method.alpha_curriculum": False}),
    "distillm2_no_beta": ("DistiLLM-2 without the rising β", "distillm2", {"method.beta_cap": 1.0}),
    "feature_kd": ("Feature KD", "feature_kd", {}),
    "relation_kd": ("Relation KD", "relation_kd", {}),
    "online_kd": ("Online KD (mutual learning)", "online_kd", {}),
    "self_distill": ("Self-distillation (EMA teacher)", "self_distill", {}),
    "sparse_kd": ("Offline top-k KD", "sparse_kd", {}),
}
# Each group: (title, row keys, the paper's ordering or None).
GROUPS = (
    ("DSKD, same vocabulary", ("sft", "kd", "dskd"), "DSKD > KD > SFT"),
    ("DSKD, different vocabularies (teacher B)", ("seqkd_b", "uld", "mined", "eta", "dskd_cma"),
     "DSKD-CMA > MinED ≈ ULD > SeqKD"),
    ("DistiLLM-2, on-policy family",
     ("sft", "kd", "seqkd", "gkd", "imitkd", "distillm", "distillm2", "distillm2_no_alpha", "distillm2_no_beta"),
     "DistiLLM-2 ≥ DistiLLM > GKD; each curriculum adds a little"),
    ("Feature, relation, online, self and offline top-k KD",
     ("sft", "kd", "feature_kd", "relation_kd", "online_kd", "self_distill", "sparse_kd"), None),
)


def load_config(name: str):
    path = os.path.join(REPO, "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def run_one(name: str, overrides: dict, seed: int, steps: int, workdir: str) -> dict:
    from jdistill import demo
    from jdistill.engine import trainer

    config = load_config(name)
    config.train.seed = seed
    if steps:
        config.train.steps = steps
    config.train.checkpoint_every = 0
    config.eval.every = 0  # Only the final evaluation (a row may override this).
    config.train.export_hf = False
    config.logging.progress_bar = False
    config.logging.tensorboard = False
    for dotted, value in overrides.items():
        *groups, field = dotted.split(".")
        node = config
        for group in groups:
            node = node[group]
        node[field] = value
    start = time.time()
    result = trainer.run(demo.resolved(config), workdir)
    final = result.final_eval
    return {"rougeL": float(final["rougeL"]), "exact_match": float(final["exact_match"]),
            "seconds": time.time() - start}


def mean_std(values) -> str:
    """``mean ± std`` over seeds; a single run is shown alone (it has no spread to report)."""
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}"


def measured_order(keys, results) -> str:
    """Labels of ``keys`` sorted by mean ROUGE-L, best first."""
    present = [key for key in keys if key in results]
    ranked = sorted(present, key=lambda key: -statistics.fmean(r["rougeL"] for r in results[key]))
    return " > ".join(ROWS[key][0] for key in ranked)


# The hand-written analysis in the results file starts at this heading; rewriting the tables keeps it.
ANALYSIS_HEADING = "## Reading the numbers"


def kept_analysis(path) -> list[str]:
    """The lines of ``path`` from ``ANALYSIS_HEADING`` on (empty when the file or the heading is missing)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.read().split("\n")
    for index, line in enumerate(lines):
        if line.strip() == ANALYSIS_HEADING:
            return lines[index:]
    return []


def write_markdown(path, results, seeds, steps):
    analysis = kept_analysis(path)
    lines = [
        "# Quality on the demo",
        "",
        f"Measured by `python benchmarks/quality.py` (seeds {', '.join(map(str, seeds))}; "
        f"{'config steps' if not steps else f'{steps} steps'}; greedy decoding on the demo's held-out validation "
        f"split; {platform.machine()} CPU). ROUGE-L (F, ×100) and exact match (%) are mean ± std over the seeds "
        "that ran (the `seeds` column).",
        "",
    ]
    for title, keys, paper in GROUPS:
        present = [key for key in keys if key in results]
        if not present:
            continue
        lines += [f"## {title}", "", "| method | seeds | ROUGE-L | exact match | minutes per run |",
                  "|---|---|---|---|---|"]
        for key in present:
            r = results[key]
            minutes = statistics.fmean(x["seconds"] for x in r) / 60
            lines.append(f"| {ROWS[key][0]} | {len(r)} | {mean_std([x['rougeL'] for x in r])} | "
                         f"{mean_std([x['exact_match'] for x in r])} | {minutes:.1f} |")
        lines.append("")
        measured = f"Measured (ROUGE-L): {measured_order(present, results)}."
        lines += [f"Paper's ordering: {paper}. {measured}" if paper else measured, ""]
    lines += analysis
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--steps", type=int, default=0, help="training steps per run; 0 = the config's")
    parser.add_argument("--rows", default="", help=f"comma-separated row keys; empty = all ({', '.join(ROWS)})")
    parser.add_argument("--workdir", default="workdirs/quality")
    parser.add_argument("--results", default="", help="JSONL of finished runs: read to skip them, appended to")
    parser.add_argument("--out", default=os.path.join(REPO, "docs", "results.md"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    wanted = [k for k in args.rows.split(",") if k] or list(ROWS)
    unknown = sorted(set(wanted) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    results_path = args.results or os.path.join(args.workdir, "runs.jsonl")
    os.makedirs(os.path.dirname(results_path) or ".", exist_ok=True)
    results: dict[str, list] = {}
    done = set()
    if os.path.exists(results_path):
        with open(results_path) as f:
            for line in f:
                record = json.loads(line)
                if record["seed"] in seeds:
                    results.setdefault(record["row"], []).append(record)
                    done.add((record["row"], record["seed"]))
    for key in wanted:
        label, name, overrides = ROWS[key]
        if not os.path.exists(os.path.join(REPO, "configs", f"{name}.py")):
            print(f"skipping {key}: configs/{name}.py does not exist", flush=True)
            continue
        for seed in seeds:
            if (key, seed) in done:
                continue
            workdir = os.path.join(args.workdir, key, f"seed{seed}")
            record = {"row": key, "seed": seed, **run_one(name, overrides, seed, args.steps, workdir)}
            results.setdefault(key, []).append(record)
            with open(results_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)
    write_markdown(args.out, results, seeds, args.steps)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
