"""The end-of-run report: ``workdir/report.md`` and ``workdir/curves.png``.

``curves.png`` (:func:`curves_figure`) has one panel per quantity, against steps:

* **loss**: the training loss and the validation loss;
* **loss terms**: each term the method logs separately (e.g. the gold
  cross-entropy and the distillation term), read generically: the names the
  trainer records once per run in a ``loss_terms`` record of
  ``metrics.jsonl`` (the method's step metrics);
* **learning rate**;
* **validation metrics** (the student's CE on the gold responses, ROUGE-L,
  exact match), with a dashed horizontal line per *reference* whose value is
  known, as kept in ``workdir/references.json``: the demo's teacher and
  supervised-only student (on the demo's test split), and the final
  evaluation of earlier runs named by ``logging.reference_runs``
  (:func:`reference_runs`).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Sequence

from jdistill.engine.metrics_writer import read_metrics

REFERENCES_FILE = "references.json"
LOSS_TERMS_EVENT = "loss_terms"  # the metrics.jsonl record naming the method's loss terms (``names``)
EVAL_PANELS = (("student_ce", "student CE"), ("rougeL", "ROUGE-L"), ("exact_match", "exact match"))

# Train-record keys that are not loss terms (the engine's own bookkeeping), for workdirs without a loss_terms record.
_BOOKKEEPING = frozenset({"step", "split", "time", "loss", "grad_norm", "finite", "teacher_finite", "response_tokens",
                          "updates", "tokens_per_s", "learning_rate", "student_ce", "rougeL", "exact_match"})
# jdistill.evaluate's result columns, as the names of the training run's validation metrics.
_SCORING_NAMES = {"rougeL_greedy": "rougeL", "exact_match_greedy": "exact_match", "ce": "student_ce"}


def loss_terms(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The loss terms the run logged: its latest ``loss_terms`` record, else the train metrics the eval records share."""
    named = [r for r in records if r.get("split") == LOSS_TERMS_EVENT]
    if named:
        return list(named[-1].get("names", []))
    train = [r for r in records if r.get("split") == "train"]
    evals = [r for r in records if r.get("split") == "eval"]
    train_keys = list(dict.fromkeys(k for r in train for k in r))
    eval_keys = {k for r in evals for k in r}
    return [k for k in train_keys if k in eval_keys and k not in _BOOKKEEPING]


def _final_eval(run_dir: str) -> dict[str, float]:
    evals = [r for r in read_metrics(os.path.join(run_dir, "metrics.jsonl")) if r.get("split") == "eval"]
    if not evals:
        return {}
    last = max(evals, key=lambda r: r["step"])
    return {k: v for k, v in last.items() if k not in ("step", "split", "time")}


def load_references(workdir: str) -> dict[str, dict[str, float]]:
    """``{name: {metric: value}}`` of ``workdir/references.json``: reference values drawn as dashed lines."""
    path = os.path.join(workdir, REFERENCES_FILE)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return {str(name): dict(values) for name, values in json.load(f).items() if values}


def reference_runs(spec: str) -> dict[str, dict[str, float]]:
    """The references ``logging.reference_runs`` names: comma-separated ``name=path`` (or ``path``).

    ``path`` is an earlier run's workdir (its final evaluation: e.g. the
    supervised fine-tuning baseline's) or a results file of ``jdistill.evaluate`` (each scored model:
    its greedy ROUGE-L and exact match, and its CE as ``student_ce``).
    """
    references: dict[str, dict[str, float]] = {}
    for item in (part.strip() for part in str(spec or "").split(",")):
        if not item:
            continue
        name, _, where = item.rpartition("=")
        name = name or os.path.basename(os.path.normpath(where))
        if os.path.isdir(where):
            references[name] = _final_eval(where)
        elif os.path.isfile(where):
            with open(where, encoding="utf-8") as f:
                rows = json.load(f).get("results", [])
            for row in rows:
                label = name if len(rows) == 1 else f"{name}: {row.get('model', '?')}"
                references[label] = {_SCORING_NAMES[k]: v for k, v in row.items() if k in _SCORING_NAMES}
    return {name: values for name, values in references.items() if values}


def add_references(workdir: str, references: Mapping[str, Mapping[str, float]], *, redraw: bool = True) -> str | None:
    """Adds ``references`` to ``workdir/references.json`` and (``redraw``) draws ``curves.png`` again."""
    stored = load_references(workdir)
    stored.update({name: dict(values) for name, values in references.items()})
    with open(os.path.join(workdir, REFERENCES_FILE), "w", encoding="utf-8") as f:
        json.dump(stored, f, indent=1, sort_keys=True)
    return plot_curves(workdir) if redraw else None


def curves_figure(records: Sequence[Mapping[str, Any]], *, references: Mapping[str, Mapping[str, float]] = None):
    """The curves as a matplotlib Figure (one axis per panel; every line labelled), or ``None`` without records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("split") == "train"]
    evals = [r for r in records if r.get("split") == "eval"]
    if not train and not evals:
        return None
    references = references or {}
    terms = [k for k in loss_terms(records) if any(k in r for r in train)]
    panels = ["loss"] + (["terms"] if terms else []) + (["lr"] if any("learning_rate" in r for r in train) else [])
    panels += [key for key, _ in EVAL_PANELS if any(key in r for r in evals)]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.6 * nrows), squeeze=False)

    def series(rows, key):
        points = [(r["step"], r[key]) for r in rows if key in r]
        return [p[0] for p in points], [p[1] for p in points]

    titles = dict(EVAL_PANELS)
    for ax, panel in zip(axes.flat, panels):
        ax.set_xlabel("step")
        if panel == "loss":
            ax.set_title("loss")
            if any("loss" in r for r in train):
                ax.plot(*series(train, "loss"), label="train loss")
            if any("loss" in r for r in evals):
                ax.plot(*series(evals, "loss"), "o-", label="eval loss")
        elif panel == "terms":
            ax.set_title("loss terms (train)")
            for key in terms:
                ax.plot(*series(train, key), label=key)
        elif panel == "lr":
            ax.set_title("learning rate")
            ax.plot(*series(train, "learning_rate"), label="learning rate")
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        else:
            ax.set_title(f"eval {titles[panel]}")
            ax.plot(*series(evals, panel), "o-", label="this run")
            for i, (name, values) in enumerate(sorted(references.items())):
                if panel in values:
                    ax.axhline(float(values[panel]), linestyle="--", color=f"C{i + 1}", label=name)
        if ax.get_lines():
            ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def plot_curves(workdir: str) -> str | None:
    """Draws ``workdir/curves.png`` from ``metrics.jsonl`` (:func:`curves_figure`). Returns its path."""
    import matplotlib.pyplot as plt

    records = read_metrics(os.path.join(workdir, "metrics.jsonl"))
    fig = curves_figure(records, references=load_references(workdir))
    if fig is None:
        return None
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
                 samples: Sequence[Mapping[str, str]] = (),
                 references: Mapping[str, Mapping[str, float]] | None = None) -> str:
    """Writes ``report.md``: the run summary, a results table, the curves and sample outputs.

    ``references``: reference values for the curves (:func:`reference_runs`), kept in ``references.json``.
    """
    if references:
        add_references(workdir, references, redraw=False)
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
