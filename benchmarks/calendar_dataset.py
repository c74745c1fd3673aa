"""A second dataset, built differently from the demo: calendar facts computed by Python's ``calendar`` module.

The demo's tasks come from an invented world with hand-written answer
distributions; this one comes from real facts (weekdays, month lengths, leap
years of the Gregorian calendar), with answers in a few phrasings. It exists
to check that the quality protocol and the methods' defaults carry over to
data nobody shaped for them (docs/results.md, "A second dataset"):

    python benchmarks/calendar_dataset.py --out workdirs/calendar   # data + a teacher fine-tuned on it
    python benchmarks/quality.py --rows sft,kd --label "calendar facts" \\
        --results benchmarks/results/quality_calendar.jsonl --out docs/results_calendar.md \\
        --data "$(cat workdirs/calendar/overrides.json)"

The teacher is the demo's pre-trained teacher base fine-tuned on the
6,000-example ``teacher_train`` split; the student is the demo's student base
trained on the 1,000-example ``train`` split; 1,000 test examples.
"""

from __future__ import annotations

import argparse
import calendar
import datetime
import json
import os
import random

MONTHS = list(calendar.month_name)[1:]


def record(rng: random.Random) -> tuple[str, str, str]:
    kind = rng.choice(("weekday", "month_days", "leap"))
    year = rng.randint(1900, 2099)
    if kind == "weekday":
        day = datetime.date(year, 1, 1) + datetime.timedelta(days=rng.randint(0, 364))
        name = calendar.day_name[day.weekday()]
        text = day.strftime("%d %B %Y").lstrip("0")
        answer = rng.choice((f"{text} was a {name}.", f"It was a {name}."))
        return kind, f"Which day of the week was {text}?", answer
    if kind == "month_days":
        month = rng.randint(1, 12)
        days = calendar.monthrange(year, month)[1]
        answer = rng.choice((f"{MONTHS[month - 1]} {year} has {days} days.", f"It has {days} days."))
        return kind, f"How many days are in {MONTHS[month - 1]} {year}?", answer
    leap = calendar.isleap(year)
    answer = (rng.choice((f"Yes, {year} is a leap year.", "Yes.")) if leap
              else rng.choice((f"No, {year} is not a leap year.", "No.")))
    return kind, f"Is {year} a leap year?", answer


SIZES = {"teacher_train": 6000, "train": 1000, "validation": 300, "test": 1000}


def write_splits(out: str, seed: int = 0) -> dict[str, str]:
    os.makedirs(out, exist_ok=True)
    paths = {}
    for offset, (split, size) in enumerate(SIZES.items()):
        rng = random.Random(seed * 100 + offset)
        paths[split] = os.path.join(out, f"{split}.jsonl")
        with open(paths[split], "w", encoding="utf-8") as f:
            for index in range(size):
                task, prompt, response = record(rng)
                f.write(json.dumps({"id": f"{split}-{index}", "task": task, "prompt": prompt + "\nAnswer:",
                                    "response": " " + response}) + "\n")
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="workdirs/calendar")
    parser.add_argument("--teacher-steps", type=int, default=0,
                        help="fine-tuning steps of the teacher; 0 = the demo teacher's recipe (300)")
    args = parser.parse_args()
    paths = write_splits(args.out)

    from jdistill import demo
    from jdistill.demo import assets

    # The demo teacher's own fine-tuning recipe, from its pre-trained base (optionally for more steps).
    recipe = dict(assets.TEACHER_FINETUNING)
    name = "teacher"
    if args.teacher_steps:
        recipe["steps"], name = args.teacher_steps, f"teacher_{args.teacher_steps}steps"
    teacher_dir = str(assets.trained_model_dir(
        os.path.abspath(os.path.join(args.out, name)), start=demo.resolved_path("demo:teacher_base"),
        train_file=paths["teacher_train"], eval_file=paths["validation"], recipe=recipe,
        what=f"calendar teacher (the demo teacher base fine-tuned on teacher_train, {recipe['steps']} steps)"))
    overrides = {"teacher.path": os.path.abspath(teacher_dir), "data.train_files": os.path.abspath(paths["train"]),
                 "data.eval_files": os.path.abspath(paths["validation"]),
                 "test_files": os.path.abspath(paths["test"])}
    with open(os.path.join(args.out, "overrides.json"), "w") as f:
        json.dump(overrides, f)
    print(json.dumps(overrides))


if __name__ == "__main__":
    main()
