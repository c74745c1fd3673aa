"""The papers' quality tables in miniature, on the embedded demo, with a protocol a reviewer would accept.

Every row trains its config (the method's paper settings; the demo's shared
budget: steps, batch, learning rate, student initialisation) for several
seeds; each run's exported student is then scored on the demo's held-out
**test** split with :mod:`jdistill.engine.scoring` (the ``python -m
jdistill.evaluate`` protocol): ROUGE-L and exact match of greedy responses
and of sampled responses (temperature 1, top-p 1; one sampling seed per
training seed), the cross-entropy of the reference responses, and the
held-out KL from the demo teacher (tokenizer A) to the student. Nothing is
chosen on the test split: the settings come from the papers' scripts, and the
validation split is the one the configs evaluate on while training.

Reported per group, next to the paper's ordering: mean ± std over seeds; the
paired difference to SFT (same seed = same data order and initialisation)
with its 95% t-interval; the share of the SFT→teacher ROUGE-L gap closed.

    python benchmarks/quality.py                                  # every row, 5 seeds
    python benchmarks/quality.py --rows sft,kd --seeds 0,1,2,3,4  # the demo's headline comparison

Finished runs are appended to ``benchmarks/results/quality_demo_v2.jsonl`` and
skipped when the script runs again, so the grid fills over several sittings;
``docs/results.md`` (``--out``) is rewritten from every finished run each time,
keeping its hand-written analysis (from ``## Reading the numbers`` on).
``--data`` points every row at another dataset (the check that nothing is
tuned to the demo; see docs/results.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each row: (label, config file, overrides).
ROWS = {
    "sft": ("SFT", "sft", {}),
    # The on-policy group's baseline: SFT continued from the same SFT-warmed student the on-policy methods start from.
    "sft_warm": ("SFT (from the SFT-warmed student)", "sft", {"student.path": "demo:student_sft"}),
    "kd": ("KD (forward KL)", "kd", {}),
    # The temperature experiment (second dataset): KD at τ = 1 instead of the config's 2.
    "kd_t1": ("KD (forward KL), temperature 1", "kd", {"method.temperature": 1.0}),
    "kd_warm": ("KD (forward KL, from the SFT-warmed student)", "kd", {"student.path": "demo:student_sft"}),
    "logit_std_kd": ("KD on standardised logits", "logit_std_kd", {}),
    "dskd": ("DSKD", "dskd", {}),
    # The DSKD experiment: the student-space target starts at the teacher's logits (DSKDv2's pseudo-inverse t2s).
    "dskd_pinv": ("DSKD, t2s projector from the pseudo-inverse (DSKDv2 init)", "dskd",
                  {"method.projector_init": "pseudo_inverse"}),
    # The DSKD experiment: the teacher-space term (student hidden states read out by the teacher head) dropped.
    "dskd_no_tea": ("DSKD without the teacher-space term", "dskd", {"method.teacher_space_weight": 0.0}),
    "dskd_cma_no_tea": ("DSKD-CMA without the teacher-space term", "dskd_cma", {"method.teacher_space_weight": 0.0}),
    "seqkd": ("SeqKD (prompt pool)", "seqkd", {}),
    "seqkd_b": ("SeqKD (teacher B, prompt pool)", "seqkd", {"teacher.path": "demo:teacher_b"}),
    "uld": ("ULD", "uld", {}),
    "mined": ("MinED", "mined", {}),
    "eta": ("Exact token alignment", "eta", {}),
    "dskd_cma": ("DSKD-CMA", "dskd_cma", {}),
    "gkd": ("GKD", "gkd", {}),
    "imitkd": ("ImitKD", "imitkd", {}),
    "speculative_kd": ("Speculative KD", "speculative_kd", {}),
    "minillm": ("MiniLLM", "minillm", {}),
    # DistiLLM's off-policy probability phi moves at its per-epoch evaluations (the config's eval.every = -1).
    "distillm": ("DistiLLM", "distillm", {}),
    "distillm2": ("DistiLLM-2 (prompt pool)", "distillm2", {}),
    "distillm2_no_alpha": ("DistiLLM-2 (prompt pool) without the α curriculum", "distillm2", {"method.alpha_curriculum": False}),
    "distillm2_no_beta": ("DistiLLM-2 (prompt pool) without the rising β", "distillm2", {"method.beta_cap": 1.0}),
    # The β experiment: β held at the ramp's top from the start (more weight on the student-response term).
    "distillm2_beta_high": ("DistiLLM-2 (prompt pool), β held at 1.5", "distillm2",
                            {"method.beta_start": 1.5, "method.beta_cap": 1.5}),
    "feature_kd": ("Feature KD", "feature_kd", {}),
    "relation_kd": ("Relation KD", "relation_kd", {}),
    "online_kd": ("Online KD (mutual learning)", "online_kd", {}),
    "self_distill": ("Self-distillation (EMA teacher)", "self_distill", {}),
    "sparse_kd": ("Offline top-k KD", "sparse_kd", {}),
    # Where offline top-k KD's gain comes from, on the same 1,000 training prompts: the same loss on the gold
    # responses (teacher-forced top-k), and the teacher's answers alone (SeqKD on the labelled split's prompts).
    "sparse_kd_gold": ("Offline top-k KD on the gold responses (teacher-forced)", "sparse_kd",
                       {"method.teacher_data.source": "dataset"}),
    "seqkd_train": ("SeqKD on the 1,000 training prompts", "seqkd", {"data.train_files": "demo:train"}),
    "multi_teacher": ("Multi-teacher KD (teachers A and B, mixture)", "multi_teacher", {}),
}
# Each group: (title, row keys, the paper's ordering or None, the teacher its gap is measured to, the group's
# baseline row). A row's paired differences and gap are measured from the SFT row that starts from the same
# student: ``sft_warm`` for rows whose config starts from the SFT-warmed student, else the group's baseline.
GROUPS = (
    ("DSKD, same vocabulary", ("sft", "kd", "kd_t1", "dskd", "dskd_pinv", "dskd_no_tea", "logit_std_kd"), "DSKD ≥ KD > SFT", "demo:teacher", "sft"),
    ("DSKD, different vocabularies (teacher B)", ("sft", "seqkd_b", "uld", "mined", "eta", "dskd_cma", "dskd_cma_no_tea"),
     "DSKD-CMA > ULD, DSKD-CMA > SFT", "demo:teacher_b", "sft"),
    ("DistiLLM-2, on-policy family (on-policy rows start from the SFT-warmed student)",
     ("sft", "seqkd", "sft_warm", "kd_warm", "gkd", "imitkd", "speculative_kd", "minillm", "distillm", "distillm2",
      "distillm2_no_alpha", "distillm2_no_beta", "distillm2_beta_high"),
     "DistiLLM-2 > DistiLLM ≥ GKD > SFT; each curriculum ≥ its ablation; SeqKD > SFT", "demo:teacher", "sft"),
    ("Multi-teacher KD", ("sft", "kd", "multi_teacher"), None, "demo:teacher", "sft"),
    ("Feature, relation, online, self and offline top-k KD",
     ("sft", "kd", "feature_kd", "relation_kd", "online_kd", "self_distill", "sparse_kd", "sparse_kd_gold",
      "seqkd_train"), None, "demo:teacher",
     "sft"),
)
METRICS = ("rougeL_greedy", "exact_match_greedy", "rougeL_sampled", "exact_match_sampled", "ce", "teacher_kl")


def load_config(name: str):
    path = os.path.join(REPO, "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def set_dotted(config, dotted: str, value) -> None:
    *groups, field = dotted.split(".")
    node = config
    for group in groups:
        node = node[group]
    node[field] = value


def scoring_config(train_config, test_files: str, seed: int, reference_teacher: str):
    from jdistill.engine import scoring

    c = scoring.base_config()
    c.data.files = test_files
    c.data.max_len, c.data.max_prompt_len = int(train_config.data.max_len), int(train_config.data.max_prompt_len)
    c.generation.max_new_tokens = int(train_config.eval.max_new_tokens)
    c.generation.num_samples = 1  # one sampling seed per training seed
    c.generation.seed = seed
    c.reference_teacher = reference_teacher
    c.batch_size = 64
    return c


def score(model_dir: str, train_config, test_files: str, seed: int, reference_teacher: str) -> dict:
    from jdistill import models
    from jdistill.engine import run_setup, scoring

    config = scoring_config(train_config, test_files, seed, reference_teacher)
    mesh = models.make_mesh(-1, 1, 1)
    teacher = models.load_pretrained(reference_teacher, dtype="float32", mesh=mesh)
    tokenizer = run_setup.load_tokenizer(reference_teacher, "reference_teacher")
    row = scoring.score_model(model_dir, config, mesh=mesh, teacher=teacher, teacher_tokenizer=tokenizer)
    return {k: v for k, v in row.items() if k in METRICS or k == "examples"}


def split_data(data: dict) -> tuple[dict, str | None]:
    """``--data``'s config overrides, and its ``test_files`` (not a config key)."""
    overrides = {k: v for k, v in data.items() if k != "test_files"}
    return overrides, data.get("test_files")


def reference_teacher(data: dict) -> str:
    from jdistill import demo

    return data.get("teacher.path") or demo.resolved_path("demo:teacher")


def run_one(key: str, seed: int, steps: int, workdir: str, data: dict, keep: bool = False) -> dict:
    from jdistill import demo
    from jdistill.engine import trainer

    label, name, overrides = ROWS[key]
    config = load_config(name)
    config.train.seed = seed
    if steps:
        config.train.steps = steps
    config.train.checkpoint_every = 0
    config.train.export_hf = True
    config.logging.progress_bar = False
    config.logging.tensorboard = False
    data_overrides, test_files = split_data(data)
    for dotted, value in {**overrides, **data_overrides}.items():
        set_dotted(config, dotted, value)
    config = demo.resolved(config)
    if os.path.exists(workdir):
        shutil.rmtree(workdir)  # an unfinished earlier attempt: start clean
    start = time.time()
    result = trainer.run(config, workdir)
    seconds = time.time() - start
    test_files = test_files or demo.resolved_path("demo:test")
    scores = score(os.path.join(workdir, "student_hf"), config, test_files, seed, reference_teacher(data))
    if not keep:
        shutil.rmtree(workdir)  # the numbers are recorded; tiny models, but hundreds of runs
    return {"validation_rougeL": float(result.final_eval.get("rougeL", float("nan"))), **scores,
            "train_seconds": seconds}


def teacher_row(teacher: str, seed: int, data: dict) -> dict:
    from jdistill import demo

    data_overrides, test_files = split_data(data)
    config = load_config("sft")
    for dotted, value in data_overrides.items():
        set_dotted(config, dotted, value)
    config = demo.resolved(config)
    test_files = test_files or demo.resolved_path("demo:test")
    model = data.get("teacher.path") or demo.resolved_path(teacher)
    return score(model, config, test_files, seed, reference_teacher(data))


def row_baseline(key: str, group_baseline: str) -> str:
    """The SFT row ``key`` is compared with: the one that starts from the same student checkpoint."""
    label, name, overrides = ROWS[key]
    student = overrides.get("student.path") or str(load_config(name).student.path)
    return "sft_warm" if student == "demo:student_sft" else group_baseline


def mean_std(values) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "–"
    mean = statistics.fmean(values)
    return f"{mean:.2f}" if len(values) == 1 else f"{mean:.2f} ± {statistics.stdev(values):.2f}"


def paired_difference(runs: list[dict], baseline: list[dict], metric: str) -> str:
    """Mean of (row − baseline) over the seeds both have, with its 95% t-interval."""
    from jdistill.demo.paired_difference import paired_difference as paired

    base = {r["seed"]: r[metric] for r in baseline}
    pairs = [(base[r["seed"]], r[metric]) for r in runs if r["seed"] in base]
    if len(pairs) < 2:
        return "–"
    d = paired(*zip(*pairs))
    return f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}]"


def gap_closed(runs, baseline, teacher) -> str:
    if not runs or not baseline or not teacher:
        return "–"
    sft = statistics.fmean(r["rougeL_greedy"] for r in baseline)
    top = statistics.fmean(r["rougeL_greedy"] for r in teacher)
    if top - sft < 1.0:
        return "–"  # a teacher within a point of SFT: no gap to speak of
    return f"{100 * (statistics.fmean(r['rougeL_greedy'] for r in runs) - sft) / (top - sft):.0f} %"


ANALYSIS_HEADING = "## Reading the numbers"


def kept_analysis(path) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.read().split("\n")
    for index, line in enumerate(lines):
        if line.strip() == ANALYSIS_HEADING:
            return lines[index:]
    return []


def write_markdown(path, results, teachers, seeds, steps, data_label):
    analysis = kept_analysis(path)
    lines = [
        "# Quality on the demo" if not data_label else f"# Quality on {data_label}",
        "",
        f"Measured by `python benchmarks/quality.py` (training seeds {', '.join(map(str, seeds))}; "
        f"{'the configs’ steps' if not steps else f'{steps} steps'}; scored on the held-out test split with "
        f"`jdistill.evaluate`'s protocol; {platform.machine()} CPU). Columns: ROUGE-L (F, ×100) and exact match "
        "(%) of greedy responses; ROUGE-L of sampled responses (temperature 1, top-p 1); the cross-entropy of "
        "the reference responses (nats/token); the held-out KL from the demo teacher to the student; the paired "
        "difference of greedy ROUGE-L to the group's SFT row (same seed, same student initialisation) with its 95% "
        "t-interval; the share of the SFT→teacher gap closed. Mean ± std over seeds. Rows marked *prompt pool* "
        "train on the demo's 4,000 unlabelled prompts (their papers' setting) instead of the 1,000 labelled "
        "examples.",
        "",
    ]
    for title, keys, paper, teacher, baseline_key in GROUPS:
        present = [key for key in keys if key in results]
        if len(present) < 2:
            continue  # no comparison in this group
        teacher_runs = teachers.get(teacher, [])
        lines += [f"## {title}", "",
                  "| model | seeds | ROUGE-L | exact match | ROUGE-L sampled | CE | KL(teacher‖student) | "
                  "Δ ROUGE-L vs SFT [95% CI] | gap closed |", "|---|---|---|---|---|---|---|---|---|"]
        if teacher_runs:
            t = teacher_runs
            lines.append(f"| teacher ({teacher.split(':')[-1]}) | {len(t)} | {mean_std([r['rougeL_greedy'] for r in t])} | "
                         f"{mean_std([r['exact_match_greedy'] for r in t])} | {mean_std([r['rougeL_sampled'] for r in t])} "
                         f"| {mean_std([r['ce'] for r in t])} | {mean_std([r.get('teacher_kl', float('nan')) for r in t])} "
                         "| | |")
        for key in present:
            r = results[key]
            own_baseline = row_baseline(key, baseline_key)
            baseline = results.get(own_baseline, [])
            diff = paired_difference(r, baseline, "rougeL_greedy") if key != own_baseline else ""
            gap = gap_closed(r, baseline, teacher_runs) if key != own_baseline else ""
            lines.append(f"| {ROWS[key][0]} | {len(r)} | {mean_std([x['rougeL_greedy'] for x in r])} | "
                         f"{mean_std([x['exact_match_greedy'] for x in r])} | "
                         f"{mean_std([x['rougeL_sampled'] for x in r])} | {mean_std([x['ce'] for x in r])} | "
                         f"{mean_std([x.get('teacher_kl', float('nan')) for x in r])} | {diff} | {gap} |")
        lines.append("")
        ranked = sorted(present, key=lambda k: -statistics.fmean(x["rougeL_greedy"] for x in results[k]))
        measured = "Measured (greedy ROUGE-L): " + " > ".join(ROWS[k][0] for k in ranked) + "."
        lines += [f"Paper's ordering: {paper}. {measured}" if paper else measured, ""]
    lines += analysis
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated training seeds")
    parser.add_argument("--steps", type=int, default=0, help="training steps per run; 0 = the config's")
    parser.add_argument("--rows", default="", help=f"comma-separated row keys; empty = all ({', '.join(ROWS)})")
    parser.add_argument("--workdir", default="workdirs/quality")
    parser.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results", "quality_demo_v2.jsonl"))
    parser.add_argument("--out", default=os.path.join(REPO, "docs", "results.md"))
    parser.add_argument("--data", default="", help="JSON of config overrides for another dataset "
                        "(data.train_files, data.eval_files, teacher.path, test_files, ...)")
    parser.add_argument("--render", action="store_true", help="only rewrite --out from the recorded runs (run nothing)")
    parser.add_argument("--keep", action="store_true", help="keep each run's workdir (exported student included)")
    parser.add_argument("--label", default="", help="the dataset's name in the output's title")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    wanted = [k for k in args.rows.split(",") if k] or list(ROWS)
    unknown = sorted(set(wanted) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    data = json.loads(args.data) if args.data else {}
    os.makedirs(os.path.dirname(args.results) or ".", exist_ok=True)
    results: dict[str, list] = {}
    teachers: dict[str, list] = {}
    done = set()
    if os.path.exists(args.results):
        with open(args.results) as f:
            for line in f:
                record = json.loads(line)
                if record["seed"] not in seeds:
                    continue
                bucket = teachers if record["row"].startswith("demo:") else results
                bucket.setdefault(record["row"], []).append(record)
                done.add((record["row"], record["seed"]))

    def record_run(key, seed, values):
        record = {"row": key, "seed": seed, **values}
        (teachers if key.startswith("demo:") else results).setdefault(key, []).append(record)
        with open(args.results, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)

    # A group's teacher is scored when the run covers a comparison in it (its baseline and another row).
    if args.render:
        write_markdown(args.out, results, teachers, seeds, args.steps, args.label)
        print(f"wrote {args.out}")
        return
    needed_teachers = {teacher for _, keys, _, teacher, base in GROUPS if base in wanted and len(set(keys) & set(wanted)) > 1}
    if data:
        needed_teachers = {"demo:teacher"}  # the dataset's own teacher (data's teacher.path), under one name
    for teacher in sorted(needed_teachers):
        for seed in seeds:
            if (teacher, seed) not in done:
                record_run(teacher, seed, teacher_row(teacher, seed, data))
    for key in wanted:
        for seed in seeds:
            if (key, seed) in done:
                continue
            workdir = os.path.join(args.workdir, key, f"seed{seed}")
            record_run(key, seed, run_one(key, seed, args.steps, workdir, data, args.keep))
    write_markdown(args.out, results, teachers, seeds, args.steps, args.label)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
