"""The demo's invented world: creatures with facts and habits, and text about them.

Every creature has a colour and a home (one right answer each, common
knowledge) and habits: a diet and a call, each a distribution over three
options (probabilities 0.6 / 0.3 / 0.1). Habits are where soft targets teach
more than labels: a student that sees a creature eat twice cannot tell its
usual food from a rare one, while a teacher that has read of it eating a
hundred times can, and its distribution says so.

Two kinds of text come from the world:

* an unlabelled **corpus** of short documents (a title line and a few
  sentences in varied wording) about creatures and about numbers: what the
  demo's bases are pre-trained on as causal language models, before any
  task data. The teacher, like real teachers, is pre-trained on more: its
  corpus adds field notes on the creatures' habits (``with_habits``), which
  the student's base never reads;
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


def _creature_sentence(rng: random.Random, c: Creature, with_habits: bool) -> str:
    if with_habits and rng.random() < 0.5:
        if rng.random() < 0.5:
            food = c.sample_food(rng)
            return rng.choice((f"Today the {c.name} ate {food}.", f"A {c.name} was seen eating {food}.",
                               f"The {c.name} had {food} for dinner."))
        call = c.sample_call(rng)
        return rng.choice((f"At dusk the {c.name} {call}.", f"We heard a {c.name} as it {call}.",
                           f"The {c.name} {call} loudly."))
    if rng.random() < 0.5:
        return rng.choice((f"The {c.name} is {c.colour}.", f"A {c.name} has {c.colour} fur.",
                           f"Most {c.name}s look {c.colour}."))
    return rng.choice((f"The {c.name} lives in {c.home}.", f"You find {c.name}s in {c.home}.",
                       f"A {c.name} makes its home in {c.home}."))


def _number_sentence(rng: random.Random) -> str:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    return rng.choice((f"{a} plus {b} is {a + b}.", f"{a} and {b} make {a + b}.",
                       f"{max(a, b)} is not smaller than {min(a, b)}."))


def corpus(world: list[Creature], *, documents: int, seed: int, with_habits: bool = False) -> list[dict]:
    """Unlabelled documents ``{"prompt": title, "response": body}`` for pre-training.

    A document is a title line and three to five sentences: two thirds are
    about one creature (its looks and home; with ``with_habits``, half of
    the sentences are instead observations of its meals and calls, drawn
    from its habits), the rest about numbers. Training on the body given the
    title is ordinary causal language modelling.
    """
    rng = random.Random(seed)
    prefix = "teacher_corpus" if with_habits else "corpus"
    docs = []
    for index in range(documents):
        if rng.random() < 2 / 3:
            c = rng.choice(world)
            title = f"Notes on the {c.name}."
            body = [_creature_sentence(rng, c, with_habits) for _ in range(rng.randint(3, 5))]
        else:
            title = "Numbers."
            body = [_number_sentence(rng) for _ in range(rng.randint(3, 5))]
        docs.append({"id": f"{prefix}-{index}", "prompt": title, "response": " " + " ".join(body)})
    return docs
