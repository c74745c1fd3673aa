"""Train a student: ``python -m jdistill.main --config=configs/<method>.py [--config.key=value ...]``.

The work lives in :mod:`jdistill.engine`; this module only parses flags.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jdistill.engine import config_file

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file in configs/ (see its docstring).", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics, the report and the exported student "
    "(default: workdirs/<config name>). An existing checkpoint there is resumed."
)
_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "On an error, print the full traceback and the libraries' logs (by default: one line "
    "naming the fix; the traceback goes to <workdir>/error.log)."
)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    verbose = _VERBOSE.value or flags.FLAGS["verbosity"].present
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Library INFO chatter (orbax) only with -v 0.
    from jdistill.engine import error_report

    if not verbose:
        error_report.quiet_library_logs()
    workdir = _WORKDIR.value or os.path.join("workdirs", config_file.config_name(sys.argv))
    with error_report.reported_errors(verbose=verbose, workdir=workdir):
        from jdistill import demo  # Heavy imports after flag parsing, so --help is fast.
        from jdistill.demo import comparison
        from jdistill.engine import trainer

        config = _CONFIG.value
        on_demo = demo.uses_demo(config)
        if on_demo:
            config = demo.resolved(config)  # Builds the demo's data, tokenizers and models on first use.
        result = trainer.run(config, workdir)
        if on_demo and result.final_eval:
            comparison.compare(config, result, student_graphdef=result.student_graphdef)


def cli() -> None:
    config_file.exit_on_unknown_override(sys.argv)
    app.run(main)


if __name__ == "__main__":
    cli()
