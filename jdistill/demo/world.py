"""The demo's invented world: creatures with facts and habits, and text about them.

Every creature has a colour and a home (one right answer each) and a diet: a
distribution over three foods (probabilities 0.6 / 0.3 / 0.1). A diet is
where soft targets teach more than labels: a student that sees a creature
eat only twice cannot tell its usual food from a rare one, while a teacher
that has read much more text about it can.

Two kinds of text come from the world:

* an unlabelled **corpus** of short documents (a title line and a few
  sentences in varied wording) about creatures, sums, comparisons and word
  lists: what the demo's teacher and student bases are pre-trained on as
  causal language models, before any task data;
* the **tasks** of :mod:`jdistill.demo.tasks`, whose answers draw on the same
  facts.
"""

from __future__ import annotations

import dataclasses
import random

_ONSETS = ["bl", "zr", "qu", "fl", "gr", "mo", "ki", "ta", "vo", "su", "ne", "pi", "dr", "sk", "wh", "ju"]
_CODAS = ["rp", "nk", "x", "b", "m", "sh", "t", "z", "ll", "nd"]
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "black", "white")
HOMES = ("caves", "trees", "rivers", "deserts", "hills", "swamps", "meadows", "lakes")
FOODS = ("apples", "pears", "plums", "figs", "seeds", "roots", "fish", "worms", "grass", "nuts", "berries", "leaves")
DIET_WEIGHTS = (0.6, 0.3, 0.1)
WORDS = ("cat", "dog", "sun", "moon", "tree", "fish", "bird", "rain", "snow", "star", "leaf", "rock")


@dataclasses.dataclass(frozen=True)
class Creature:
    name: str
    colour: str
    home: str
    diet: tuple[str, str, str]  # foods in decreasing probability (DIET_WEIGHTS)

    def sample_food(self, rng: random.Random) -> str:
        return rng.choices(self.diet, weights=DIET_WEIGHTS, k=1)[0]


def creatures(count: int = 64, seed: int = 1234) -> list[Creature]:
    """``count`` invented creatures, fixed by ``seed``."""
    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < count:
        names.add(rng.choice(_ONSETS) + rng.choice("aeiou") + rng.choice(_CODAS))
    return [Creature(name, rng.choice(COLOURS), rng.choice(HOMES), tuple(rng.sample(FOODS, 3)))
            for name in sorted(names)]


def _creature_sentence(rng: random.Random, c: Creature) -> str:
    kind = rng.choice(("colour", "home", "food", "food", "food"))
    if kind == "colour":
        return rng.choice((f"The {c.name} is {c.colour}.", f"A {c.name} has {c.colour} fur.",
                           f"Most {c.name}s look {c.colour}."))
    if kind == "home":
        return rng.choice((f"The {c.name} lives in {c.home}.", f"You find {c.name}s in {c.home}.",
                           f"A {c.name} makes its home in {c.home}."))
    food = c.sample_food(rng)
    return rng.choice((f"Today the {c.name} ate {food}.", f"A {c.name} was seen eating {food}.",
                       f"The {c.name} likes {food}."))


def _number_sentence(rng: random.Random) -> str:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    return rng.choice((f"{a} plus {b} is {a + b}.", f"{a} and {b} make {a + b}.",
                       f"{max(a, b)} is not smaller than {min(a, b)}."))


def corpus(world: list[Creature], *, documents: int, seed: int) -> list[dict]:
    """Unlabelled documents ``{"prompt": title, "response": body}`` for pre-training.

    A document is a title line and three to six sentences: two thirds are
    about one creature, the rest about numbers or word lists. Training on the
    body given the title is ordinary causal language modelling.
    """
    rng = random.Random(seed)
    docs = []
    for index in range(documents):
        roll = rng.random()
        if roll < 2 / 3:
            c = rng.choice(world)
            title = f"Notes on the {c.name}."
            body = [_creature_sentence(rng, c) for _ in range(rng.randint(3, 6))]
        elif roll < 5 / 6:
            title = "Numbers."
            body = [_number_sentence(rng) for _ in range(rng.randint(3, 6))]
        else:
            title = "Words."
            body = []
            for _ in range(rng.randint(2, 4)):
                words = rng.sample(WORDS, rng.randint(2, 4))
                body.append(" ".join(words) + " backwards is " + " ".join(reversed(words)) + ".")
        docs.append({"id": f"corpus-{index}", "prompt": title, "response": " " + " ".join(body)})
    return docs
