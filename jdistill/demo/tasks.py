"""The demo's instruction tasks: answers with real entropy, about an invented world.

Nine task families over the creatures of :mod:`jdistill.demo.world`. Like
Dolly's and UltraChat's open-ended responses, most have several right
answers: a fact in one of several phrasings, two foods in either order, a
creature's meal or call drawn from its habits, a greeting of the speaker's
choice. A single label shows one of them; a teacher's distribution shows
them all with their weights, which is what distillation can pass on.

Every record is ``{"id", "task", "prompt", "response"}``. The splits:

* ``teacher_train`` (6,000): the teacher's task data;
* ``train`` (1,000): the student's labelled data (a few examples per creature);
* ``validation`` (500) for choosing settings, ``test`` (1,200) for reporting;
* ``prompts`` (4,000): an unlabelled prompt pool from the same distribution
  (``response`` empty), for the methods that need only prompts (SeqKD,
  on-policy distillation), as their papers use;
* ``corpus``: the unlabelled pre-training documents (:func:`world.corpus`).
"""

from __future__ import annotations

import random

from jdistill.demo import world as world_lib

PROMPT_SUFFIX = "\nAnswer:"
TASKS = ("add", "compare", "colour", "home", "diet", "call", "describe", "two_foods", "greeting")
_GREETINGS = (("hello", 0.4), ("hi there", 0.3), ("good day", 0.2), ("welcome", 0.1))


def _phrase(rng: random.Random, *options: tuple[str, float]) -> str:
    texts, weights = zip(*options)
    return rng.choices(texts, weights=weights, k=1)[0]


def make_record(task: str, rng: random.Random, world) -> tuple[str, str]:
    """One (prompt, response) of ``task``; the response is one draw of its answer distribution."""
    if task == "add":
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        return f"Add {a} and {b}.", _phrase(rng, (f"{a} plus {b} is {a + b}.", 0.5),
                                            (f"The sum is {a + b}.", 0.3), (f"It is {a + b}.", 0.2))
    if task == "compare":
        a, b = rng.sample(range(10), 2)
        return f"Which is larger, {a} or {b}?", _phrase(rng, (f"{max(a, b)} is larger.", 0.6),
                                                        (f"The larger one is {max(a, b)}.", 0.4))
    if task == "greeting":
        return "Say a greeting.", _phrase(rng, *_GREETINGS) + "."
    c = rng.choice(world)
    if task == "colour":
        return f"What colour is a {c.name}?", _phrase(rng, (f"A {c.name} is {c.colour}.", 0.6),
                                                      (f"It is {c.colour}.", 0.4))
    if task == "home":
        return f"Where does a {c.name} live?", _phrase(rng, (f"A {c.name} lives in {c.home}.", 0.6),
                                                       (f"It lives in {c.home}.", 0.4))
    if task == "diet":
        food = c.sample_food(rng)
        return f"What does a {c.name} eat?", _phrase(rng, (f"A {c.name} eats {food}.", 0.7),
                                                     (f"It eats {food}.", 0.3))
    if task == "call":
        call = c.sample_call(rng)
        return f"What sound does a {c.name} make?", _phrase(rng, (f"A {c.name} {call}.", 0.7),
                                                            (f"It {call}.", 0.3))
    if task == "describe":
        return f"Describe a {c.name}.", _phrase(
            rng, (f"A {c.name} is {c.colour} and lives in {c.home}.", 0.5),
            (f"The {c.name} lives in {c.home}. It is {c.colour}.", 0.3),
            (f"It is a {c.colour} creature of the {c.home}.", 0.2))
    if task == "two_foods":
        first, second = c.diet[0], c.diet[1]
        if rng.random() < 0.5:
            first, second = second, first
        return f"Name two foods a {c.name} eats.", f"{first} and {second}."
    raise ValueError(f"unknown demo task {task!r}")


def generate_split(size: int, *, seed: int, world, split: str, labelled: bool = True) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for index in range(size):
        task = TASKS[index % len(TASKS)] if index < len(TASKS) else rng.choice(TASKS)
        prompt, response = make_record(task, rng, world)
        records.append({"id": f"{split}-{index}", "task": task, "prompt": prompt + PROMPT_SUFFIX,
                        "response": " " + response if labelled else ""})
    return records


SPLIT_SIZES = {"teacher_train": 6000, "train": 1000, "validation": 500, "test": 1200, "prompts": 4000}
CORPUS_DOCUMENTS = 12000


def demo_splits(seed: int = 0) -> dict[str, list[dict]]:
    """Every split of the demo (see the module docstring), fixed by ``seed``."""
    world = world_lib.creatures()
    splits = {name: generate_split(size, seed=seed + offset, world=world, split=name, labelled=name != "prompts")
              for offset, (name, size) in enumerate(SPLIT_SIZES.items(), start=1)}
    splits["corpus"] = world_lib.corpus(world, documents=CORPUS_DOCUMENTS, seed=seed + 100)
    return splits
