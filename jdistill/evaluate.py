"""Score Hugging Face directories on a dataset: ``python -m jdistill.evaluate --config=configs/evaluate.py ...``.

The work lives in :mod:`jdistill.engine.scoring`; this module only parses flags.
"""

from __future__ import annotations

import sys

from absl import app
from ml_collections import config_flags

from jdistill.engine import config_file

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a scoring config, e.g. configs/evaluate.py (see its docstring).", lock_config=True
)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from jdistill.engine import scoring  # Heavy imports after flag parsing, so --help is fast.

    scoring.run(_CONFIG.value)


def cli() -> None:
    config_file.exit_on_unknown_override(sys.argv)
    app.run(main)


if __name__ == "__main__":
    cli()
