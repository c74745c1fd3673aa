"""A procedurally generated instruction dataset with knowledge worth distilling.

Seven task families. Four have one right answer (arithmetic, comparison,
word reversal, and facts about invented creatures that must be memorised);
three have a genuinely stochastic answer distribution (a fruit, a sky colour,
a greeting), where a teacher's soft targets carry more than any single
sampled label. Every record is ``{"id", "task", "prompt", "response"}``.

The teacher learns from a large split; the student's labelled split is
smaller and covers only part of the creature facts, as in real distillation
where the teacher has seen far more than the student's labelled data.
"""

from __future__ import annotations

import random

PROMPT_SUFFIX = "\nAnswer:"

# Invented creatures and their facts: knowledge the teacher memorises.
_SYLLABLES = ["bl", "zr", "qu", "fl", "gr", "mo", "ki", "ta", "vo", "su", "ne", "pi"]
_VOWEL_ENDS = ["rp", "nk", "x", "b", "m", "sh", "t", "z"]
_COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
_HOMES = ["caves", "trees", "rivers", "deserts", "hills", "swamps"]
_WORDS = ["cat", "dog", "sun", "moon", "tree", "fish", "bird", "rain", "snow", "star", "leaf", "rock"]

# Stochastic families: (prompt, [(answer, probability), ...]).
_STOCHASTIC = {
    "fruit": ("Name a fruit.", [("apple", 0.4), ("pear", 0.3), ("plum", 0.2), ("fig", 0.1)]),
    "sky": ("What colour can the sky be?", [("blue", 0.6), ("grey", 0.3), ("orange", 0.1)]),
    "greeting": ("Say a greeting.", [("hello", 0.5), ("hi there", 0.3), ("good day", 0.2)]),
}

TASKS = ("add", "compare", "reverse", "creature", "fruit", "sky", "greeting")


def creatures(count: int = 48, seed: int = 1234) -> list[tuple[str, str, str]]:
    """``(name, colour, home)`` for ``count`` invented creatures (fixed by ``seed``)."""
    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < count:
        names.add(rng.choice(_SYLLABLES) + rng.choice("aeiou") + rng.choice(_VOWEL_ENDS))
    return [(name, rng.choice(_COLORS), rng.choice(_HOMES)) for name in sorted(names)]


def _stochastic_answer(rng: random.Random, options) -> str:
    answers, weights = zip(*options)
    return rng.choices(answers, weights=weights, k=1)[0]


def make_record(task: str, rng: random.Random, known_creatures) -> tuple[str, str]:
    """One (prompt, response) of ``task``."""
    if task == "add":
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        return f"Add {a} and {b}.", f"{a} plus {b} is {a + b}."
    if task == "compare":
        a, b = rng.sample(range(10), 2)
        return f"Which is larger, {a} or {b}?", f"{max(a, b)} is larger."
    if task == "reverse":
        words = rng.sample(_WORDS, rng.randint(2, 4))
        return "Reverse the words: " + " ".join(words), " ".join(reversed(words))
    if task == "creature":
        name, colour, home = rng.choice(known_creatures)
        if rng.random() < 0.5:
            return f"What colour is a {name}?", f"A {name} is {colour}."
        return f"Where does a {name} live?", f"A {name} lives in {home}."
    prompt, options = _STOCHASTIC[task]
    return prompt, _stochastic_answer(rng, options) + "."


def generate_split(size: int, *, seed: int, known_creatures, split: str) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for index in range(size):
        task = TASKS[index % len(TASKS)] if index < len(TASKS) else rng.choice(TASKS)
        prompt, response = make_record(task, rng, known_creatures)
        records.append({"id": f"{split}-{index}", "task": task, "prompt": prompt + PROMPT_SUFFIX,
                        "response": " " + response})
    return records


def demo_splits(*, teacher_size=6000, student_size=1000, eval_size=140, seed=0) -> dict[str, list[dict]]:
    """The four demo splits: ``teacher_train``, ``train`` (student), ``validation``, ``test``.

    The student's labelled split covers only two thirds of the creatures; the
    held-out splits cover all of them.
    """
    all_creatures = creatures()
    student_creatures = all_creatures[: 2 * len(all_creatures) // 3]
    return {
        "teacher_train": generate_split(teacher_size, seed=seed + 1, known_creatures=all_creatures, split="teacher"),
        "train": generate_split(student_size, seed=seed + 2, known_creatures=student_creatures, split="train"),
        "validation": generate_split(eval_size, seed=seed + 3, known_creatures=all_creatures, split="validation"),
        "test": generate_split(eval_size, seed=seed + 4, known_creatures=all_creatures, split="test"),
    }
