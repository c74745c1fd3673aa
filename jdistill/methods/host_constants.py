"""Arrays a method derives on the host from the two tokenizers and uses as constants in its loss.

Cross-vocabulary methods need tables such as MinED's vocabulary map or the
exact-alignment method's matched vocabulary inside the jitted loss. They are
not trainable (so they are not method parameters, which the optimizer and its
weight decay would change) and they depend on the tokenizer pair, which the
method first sees in its ``prepare_examples`` hook. That hook computes them
(cached on disk where costly) and stores them here; the loss reads them while
it is traced, so they enter the compiled step as constants.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


class HostConstants:
    """Named host arrays, set once per tokenizer pair, read by the loss at trace time."""

    def __init__(self, method_name: str):
        self._method_name = method_name
        self._arrays: dict[str, np.ndarray] = {}
        self._pair_key: str | None = None

    def ensure(self, pair_key: str, compute: Callable[[], dict[str, np.ndarray]]) -> None:
        """Computes the arrays with ``compute()`` unless they are already set for ``pair_key``."""
        if self._pair_key != pair_key:
            self._arrays = {name: np.asarray(value) for name, value in compute().items()}
            self._pair_key = pair_key

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            raise RuntimeError(
                f"Method '{self._method_name}' has no {name!r} yet: it is computed from the tokenizers by the "
                "method's prepare_examples hook, which jdistill.engine.run_setup.build_data runs before training. "
                "Call prepare_examples (with a DataContext holding both tokenizers) before the loss."
            )
        return self._arrays[name]
