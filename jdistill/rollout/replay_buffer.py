"""DistiLLM's replay buffer of student-generated sequences (host side, first in, first out).

Entries are :class:`~jdistill.data.tokenize.TokenizedSide` rows (prompt +
generated response, with the prompt length). The buffer's contents go into
the checkpoint's JSON metadata (:meth:`ReplayBuffer.state_dict`), so a resumed
run replays exactly what an uninterrupted one would.
"""

from __future__ import annotations

import collections

import numpy as np

from jdistill.data.tokenize import TokenizedSide


class ReplayBuffer:
    """At most ``capacity`` sequences; pushing into a full buffer drops the oldest."""

    def __init__(self, capacity: int):
        if int(capacity) < 1:
            raise ValueError(f"Replay buffer capacity must be >= 1, got {capacity} (method.replay_capacity).")
        self.capacity = int(capacity)
        self._rows: collections.deque[TokenizedSide] = collections.deque(maxlen=self.capacity)

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def full(self) -> bool:
        return len(self._rows) >= self.capacity

    def push(self, rows) -> None:
        for row in rows:
            self._rows.append(TokenizedSide(np.asarray(row.ids, np.int32), int(row.prompt_len)))

    def sample(self, count: int, rng: np.random.Generator) -> list[TokenizedSide]:
        """``count`` rows drawn uniformly (without replacement when the buffer holds enough)."""
        if not self._rows:
            raise ValueError("Cannot sample from an empty replay buffer.")
        picks = rng.choice(len(self._rows), size=count, replace=len(self._rows) < count)
        return [self._rows[int(i)] for i in picks]

    def state_dict(self) -> dict:
        """A JSON-serialisable snapshot (token ids as lists of ints)."""
        return {
            "capacity": self.capacity,
            "ids": [row.ids.tolist() for row in self._rows],
            "prompt_lens": [int(row.prompt_len) for row in self._rows],
        }

    def load_state_dict(self, state: dict) -> None:
        """Replaces the contents with a :meth:`state_dict` snapshot (the newest ``capacity`` rows)."""
        self._rows.clear()
        rows = zip(state["ids"], state["prompt_lens"])
        self.push(TokenizedSide(np.asarray(ids, np.int32), int(n)) for ids, n in rows)
