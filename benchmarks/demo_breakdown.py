"""Where a model's test score comes from on the demo: greedy ROUGE-L per task family, and the share of diet and call
answers that name the creature's usual food or call (the mode of its habit, what a reference most often says).

    python benchmarks/demo_breakdown.py teacher=demo:teacher sft=workdirs/sft/student_hf kd=workdirs/kd/student_hf
    python benchmarks/demo_breakdown.py --test-file workdirs/calendar/test.jsonl teacher=... sft=... kd=...

Prints a markdown table (models as columns); used for docs/results.md's reading of the demo rows.
"""

from __future__ import annotations

import argparse
import collections
import re

import numpy as np
from rouge_score import rouge_scorer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="name=path (an HF directory or a demo: asset)")
    parser.add_argument("--max_new_tokens", type=int, default=24)
    parser.add_argument("--test-file", default="", help="another test split with a 'task' field (default: the "
                        "demo's; the usual-habit rates are the demo's only)")
    args = parser.parse_args()

    import jax
    from transformers import AutoTokenizer

    from jdistill import data as data_lib
    from jdistill import demo, models, sampling
    from jdistill.demo import world
    from jdistill.engine.evaluation import response_texts, rouge_l

    records = data_lib.load_records(args.test_file or demo.resolved_path("demo:test"))
    habits = {} if args.test_file else {"diet": ({c.name: c.diet for c in world.creatures()}, r"What does a (\w+) eat"),
              "call": ({c.name: c.calls for c in world.creatures()}, r"What sound does a (\w+) make")}
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    table = collections.defaultdict(dict)
    for spec in args.models:
        name, path = spec.split("=", 1)
        path = demo.resolved_path(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = models.load_pretrained(path, dtype="float32")
        text, _ = data_lib.to_text_examples(records)
        examples, _ = data_lib.tokenize_examples(text, tokenizer, max_len=64, max_prompt_len=32)
        prompts = [e.student.ids[: e.student.prompt_len].tolist() for e in examples]
        settings = sampling.SamplingSettings(temperature=0.0, max_new_tokens=args.max_new_tokens)
        stop = sampling.stop_tokens(tokenizer, path, model.config)
        outputs = response_texts(model, prompts, tokenizer=tokenizer, settings=settings, stop=stop, batch_size=100,
                                 key=jax.random.key(0))
        by_task = collections.defaultdict(list)
        usual = collections.defaultdict(list)
        for record, output in zip(records, outputs):
            by_task[record["task"]].append(rouge_l(output, record["response"], scorer))
            if record["task"] in habits:
                options, pattern = habits[record["task"]]
                creature = re.search(pattern, record["prompt"]).group(1)
                usual[record["task"]].append(options[creature][0] in output)
        for task, values in sorted(by_task.items()):
            table[task][name] = float(np.mean(values))
        table["all"][name] = float(np.mean([v for values in by_task.values() for v in values]))
        for task, hits in usual.items():
            table[f"{task}: names the usual one (%)"][name] = 100.0 * float(np.mean(hits))
    names = [spec.split("=", 1)[0] for spec in args.models]
    print("| task | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for task, row in table.items():
        print(f"| {task} | " + " | ".join(f"{row[n]:.1f}" for n in names) + " |")


if __name__ == "__main__":
    main()
