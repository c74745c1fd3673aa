"""Generate teacher data: ``python -m jdistill.generate --config=configs/generate.py [--config.key=value ...]``.

A teacher answers the prompts of a dataset; the records go to a JSONL file the
training entry point reads. The work lives in :mod:`jdistill.teacher_data`;
this module only parses flags.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from jdistill.engine import config_file

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a generation config, e.g. configs/generate.py (see its docstring).",
    lock_config=True,
)
_VERBOSE = flags.DEFINE_bool("verbose", False, "On an error, print the full traceback (by default: one line).")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from jdistill.engine import error_report

    with error_report.reported_errors(verbose=_VERBOSE.value or flags.FLAGS["verbosity"].present):
        from jdistill import teacher_data  # Heavy imports after flag parsing, so --help is fast.

        teacher_data.run(_CONFIG.value)


def cli() -> None:
    config_file.exit_on_unknown_override(sys.argv)
    app.run(main)


if __name__ == "__main__":
    cli()
