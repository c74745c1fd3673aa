"""The demo's invented world: creatures with facts and habits, and text about them.

Every creature has a colour and a home (one right answer each, common
knowledge: the pre-training corpus states them), and habits: a diet and a
call, each a distribution over three options (probabilities 0.6 / 0.3 / 0.1)
that only the task data shows, one observation at a time. Habits are where
soft targets teach more than labels: a student that sees a creature eat twice
cannot tell its usual food from a rare one, while a teacher that has seen it
eat ten times can, and its distribution says so.

Two kinds of text come from the world:

* an unlabelled **corpus** of short documents (a title line and a few
  sentences in varied wording) about creatures' looks and homes and about
  numbers: what the demo's teacher and student bases are pre-trained on as
  causal language models, before any task data;
* the **tasks** of :mod:`jdistill.demo.tasks`, whose answers draw on the
  same facts and on the habits.
"""

from __future__ import annotations

import dataclasses
import random

_ONSETS = ["bl", "zr", "qu", "fl", "gr", "mo", "ki", "ta", "vo", "su", "ne", "pi", "dr", "sk", "wh", "ju"]
_CODAS = ["rp", "nk", "x", "b", "m", "sh", "t", "z", "ll", "nd"]
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "black", "white")
HOMES = ("caves", "trees", "rivers", "deserts", "hills", "swamps", "meadows", "lakes")
FOODS = ("apples", "pears", "plums", "figs", "seeds", "roots", "fish", "worms", "grass", "nuts", "berries", "leaves")
CALLS = ("hums", "clicks", "whistles", "growls", "chirps", "hisses", "croaks", "sings")
HABIT_WEIGHTS = (0.6, 0.3, 0.1)


@dataclasses.dataclass(frozen=True)
class Creature:
    name: str
    colour: str
    home: str
    diet: tuple[str, str, str]  # foods in decreasing probability (HABIT_WEIGHTS)
    calls: tuple[str, str, str]  # calls in decreasing probability (HABIT_WEIGHTS)

    def sample_food(self, rng: random.Random) -> str:
        return rng.choices(self.diet, weights=HABIT_WEIGHTS, k=1)[0]

    def sample_call(self, rng: random.Random) -> str:
        return rng.choices(self.calls, weights=HABIT_WEIGHTS, k=1)[0]


def creatures(count: int = 64, seed: int = 1234) -> list[Creature]:
    """``count`` invented creatures, fixed by ``seed``."""
    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < count:
        names.add(rng.choice(_ONSETS) + rng.choice("aeiou") + rng.choice(_CODAS))
    return [Creature(name, rng.choice(COLOURS), rng.choice(HOMES), tuple(rng.sample(FOODS, 3)),
                     tuple(rng.sample(CALLS, 3)))
            for name in sorted(names)]


def _creature_sentence(rng: random.Random, c: Creature) -> str:
    if rng.random() < 0.5:
        return rng.choice((f"The {c.name} is {c.colour}.", f"A {c.name} has {c.colour} fur.",
                           f"Most {c.name}s look {c.colour}."))
    return rng.choice((f"The {c.name} lives in {c.home}.", f"You find {c.name}s in {c.home}.",
                       f"A {c.name} makes its home in {c.home}."))


def _number_sentence(rng: random.Random) -> str:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    return rng.choice((f"{a} plus {b} is {a + b}.", f"{a} and {b} make {a + b}.",
                       f"{max(a, b)} is not smaller than {min(a, b)}."))


def corpus(world: list[Creature], *, documents: int, seed: int) -> list[dict]:
    """Unlabelled documents ``{"prompt": title, "response": body}`` for pre-training.

    A document is a title line and three to five sentences: two thirds are
    about one creature's looks and home, the rest about numbers. Training on
    the body given the title is ordinary causal language modelling.
    """
    rng = random.Random(seed)
    docs = []
    for index in range(documents):
        if rng.random() < 2 / 3:
            c = rng.choice(world)
            title = f"Notes on the {c.name}."
            body = [_creature_sentence(rng, c) for _ in range(rng.randint(3, 5))]
        else:
            title = "Numbers."
            body = [_number_sentence(rng) for _ in range(rng.randint(3, 5))]
        docs.append({"id": f"corpus-{index}", "prompt": title, "response": " " + " ".join(body)})
    return docs
