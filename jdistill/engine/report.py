"""The end-of-run report: ``workdir/report.md`` and ``workdir/curves.png``."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from jdistill.engine.metrics_writer import read_metrics


def plot_curves(workdir: str) -> str | None:
    """Training loss and evaluation metrics against steps, as a PNG. Returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(os.path.join(workdir, "metrics.jsonl"))
    train = [r for r in records if r["split"] == "train"]
    evals = [r for r in records if r["split"] == "eval"]
    if not train and not evals:
        return None
    eval_keys = [k for k in ("rougeL", "exact_match") if any(k in r for r in evals)]
    fig, axes = plt.subplots(1, 1 + len(eval_keys), figsize=(5 * (1 + len(eval_keys)), 3.6), squeeze=False)
    ax = axes[0, 0]
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
    if any("loss" in r for r in evals):
        ax.plot([r["step"] for r in evals if "loss" in r], [r["loss"] for r in evals if "loss" in r], "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_title("loss")
    ax.legend()
    for ax, key in zip(axes[0, 1:], eval_keys):
        points = [(r["step"], r[key]) for r in evals if key in r]
        ax.plot(*zip(*points), "o-")
        ax.set_xlabel("step")
        ax.set_title(f"eval {key}")
    fig.tight_layout()
    path = os.path.join(workdir, "curves.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    def cell(value):
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_report(workdir: str, *, title: str, summary: Mapping[str, Any], results: Sequence[Mapping[str, Any]],
                 samples: Sequence[Mapping[str, str]] = ()) -> str:
    """Writes ``report.md``: the run summary, a results table, the curves and sample outputs."""
    curves = plot_curves(workdir)
    parts = [f"# {title}", ""]
    parts += [f"- **{key}**: {value}" for key, value in summary.items()]
    if results:
        columns = list(dict.fromkeys(k for row in results for k in row))
        parts += ["", "## Results on the held-out split", "", markdown_table(results, columns)]
    if curves:
        parts += ["", "## Curves", "", "![training and evaluation curves](curves.png)"]
    if samples:
        parts += ["", "## Sample outputs", ""]
        for s in samples:
            parts += [f"**Prompt**: `{s['prompt'][-200:]!r}`  ", f"**Reference**: {s['reference']!r}  ",
                      f"**Prediction**: {s['prediction']!r}", ""]
    path = os.path.join(workdir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")
    return path
