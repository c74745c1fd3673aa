"""The demo's closing table: teacher vs SFT-only student vs distilled student on the test split.

The SFT-only baseline is the same student (the config's ``student.path``: the
pre-trained base, or the SFT-warmed student for on-policy methods) trained
with the same settings on the demo's labelled split without a teacher; it is
trained on first use and cached per training setting, like the teacher.
"""

from __future__ import annotations

import hashlib
import json
import os

import jax
import ml_collections
from flax import nnx

from jdistill import data as data_lib
from jdistill import methods, models
from jdistill.demo import assets
from jdistill.demo.paired_difference import paired_difference
from jdistill import console
from jdistill.engine import evaluation, report as report_lib

_SETTING_FIELDS = ("student.path", "train.steps", "train.batch_size", "train.seed", "optimizer.learning_rate",
                   "optimizer.warmup_steps", "optimizer.warmup_ratio", "optimizer.weight_decay",
                   "optimizer.min_lr_ratio", "data.max_len", "data.max_prompt_len")


def sft_baseline_dir(config: ml_collections.ConfigDict) -> str:
    """The demo student fine-tuned on the labelled split alone, with ``config``'s training settings."""
    from jdistill.engine import trainer

    setting = {f: assets.config_value(config, f) for f in _SETTING_FIELDS}
    setting["student.path"] = os.path.basename(str(setting["student.path"]))  # the asset, wherever the cache is
    key = hashlib.sha1(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:10]
    target = assets.cache_root() / f"sft_baseline_{key}"
    if target.exists():
        return str(target)
    console.info(f"training the SFT-only baseline student once (cached in {target}) ...")
    baseline = ml_collections.ConfigDict(config.to_dict())
    baseline.method = methods.method_config("sft")
    baseline.teacher.path = ""
    baseline.data.train_files = assets.resolve_name("train")  # labelled data, whatever the method trains on
    baseline.data.lm_files = ""
    baseline.eval.generate = False
    baseline.logging.tensorboard = False
    baseline.logging.wandb = False
    baseline.train.checkpoint_every = 0

    def build(tmp):
        trainer.run(baseline, str(tmp / "run"))
        for name in os.listdir(tmp / "run" / "student_hf"):
            os.replace(tmp / "run" / "student_hf" / name, tmp / name)

    return str(assets._atomic_dir(target, build))


def _test_examples(tokenizer, config):
    records = data_lib.load_records(assets.resolve_name("test"))
    text, _ = data_lib.to_text_examples(records)
    examples, _ = data_lib.tokenize_examples(
        text, tokenizer, max_len=config.data.max_len, max_prompt_len=config.data.max_prompt_len
    )
    return examples


def _scores(model, tokenizer, checkpoint_dir, config, mesh) -> dict:
    metrics = evaluation.generation_metrics(
        model, _test_examples(tokenizer, config), tokenizer=tokenizer, config=config.eval,
        batch_size=config.eval.batch_size, seed=config.train.seed, checkpoint_dir=checkpoint_dir, mesh=mesh,
    )
    metrics.pop("samples")
    return metrics  # with rougeL_per_example: the paired comparison's per-example scores


def compare(config: ml_collections.ConfigDict, result, *, student_graphdef) -> str:
    """Scores the three models on the demo test split, prints the table and adds it to the report."""
    from transformers import AutoTokenizer

    mesh = models.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    student_tok = AutoTokenizer.from_pretrained(config.student.tokenizer or config.student.path)
    rows = []
    if config.teacher.path:
        teacher_tok = AutoTokenizer.from_pretrained(config.teacher.tokenizer or config.teacher.path)
        teacher = models.load_pretrained(config.teacher.path, dtype="float32", mesh=mesh)
        rows.append({"model": "teacher", **_scores(teacher, teacher_tok, config.teacher.path, config, mesh)})
    if config.method.name != "sft":
        baseline = models.load_pretrained(sft_baseline_dir(config), dtype="float32", mesh=mesh)
        # The baseline starts from the student checkpoint: the same stop tokens.
        rows.append({"model": "student, SFT only",
                     **_scores(baseline, student_tok, config.student.path, config, mesh)})
    distilled = nnx.merge(student_graphdef, result.state.trainable["student"])
    label = "student, SFT only" if config.method.name == "sft" else f"student, distilled ({config.method.name})"
    rows.append({"model": label, **_scores(distilled, student_tok, config.student.path, config, mesh)})
    per_example = [row.pop("rougeL_per_example") for row in rows]
    for row in rows:
        row["rougeL"] = round(row["rougeL"], 2)
        row["exact_match"] = round(row["exact_match"], 2)
    table = report_lib.markdown_table(rows, ["model", "rougeL", "exact_match"])
    if len(rows) == 3:
        teacher_score, sft_score, distilled_score = (row["rougeL"] for row in rows)
        if teacher_score > sft_score:
            share = 100 * (distilled_score - sft_score) / (teacher_score - sft_score)
            table += f"\n\nThe distilled student closes {share:.0f}% of the SFT-only → teacher ROUGE-L gap."
    if len(rows) >= 2 and config.method.name != "sft":
        # The same test examples scored by both students: their paired difference and its interval.
        difference = paired_difference(per_example[-2], per_example[-1])
        table += (f"\n\nDistilled minus SFT-only, paired over the test examples: {difference.describe('ROUGE-L')}. "
                  "The interval covers the test split's sampling for this one training seed; "
                  "docs/results.md reports the spread over seeds.")
    if jax.process_index() == 0:
        size = len(data_lib.load_records(assets.resolve_name("test")))
        print(f"\nHeld-out demo test split ({size} examples; ROUGE-L and exact match, x100):\n" + table + "\n",
              flush=True)
        path = os.path.join(result.workdir, "report.md")
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n## Demo comparison on the test split\n\n" + table + "\n")
        # The teacher's and the SFT-only student's scores as reference lines of the curves (the last row is this run).
        report_lib.add_references(result.workdir, {f"{row['model']} (test split)": {
            "rougeL": row["rougeL"], "exact_match": row["exact_match"]} for row in rows[:-1]})
    return table
