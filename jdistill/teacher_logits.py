"""Offline teacher logits: ``python -m jdistill.teacher_logits --config=configs/sparse_kd.py [--config.key=value ...]``.

Stage 1 of offline distillation. The teacher runs once over the training
records of a *training* config (teacher-forced on their own responses, tokenized
exactly as training will read them) and its top-k log-probabilities per trained
token go to a sharded, memory-mapped top-k store
(``method.teacher_data.logits_dir``; default ``<workdir>/teacher_logits``).
Rerunning continues where it stopped. Stage 2 trains with the same config and
``--config.method.teacher_data.source=dataset``; no teacher is loaded. See
``docs/training.md`` (offline teacher logits).

The work lives in :mod:`jdistill.teacher_data.teacher_forced`; this module only
parses flags.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jdistill.engine import config_file

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A training config (configs/sparse_kd.py): its teacher, data and method.teacher_data settings.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "The training run's directory (default: workdirs/<config name>); the store defaults to "
    "<workdir>/teacher_logits."
)
_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "On an error, print the full traceback (by default: one line naming the fix)."
)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    verbose = _VERBOSE.value or flags.FLAGS["verbosity"].present
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from jdistill.engine import error_report

    if not verbose:
        error_report.quiet_library_logs()
    workdir = _WORKDIR.value or os.path.join("workdirs", config_file.config_name(sys.argv))
    with error_report.reported_errors(verbose=verbose, workdir=workdir):
        from jdistill import demo  # Heavy imports after flag parsing, so --help is fast.
        from jdistill.methods import method_settings, sparse_kd

        config = _CONFIG.value
        if config.method.name != "sparse_kd":
            raise ValueError(
                f"method {config.method.name!r} does not read stored teacher top-k; give a sparse_kd config "
                "(configs/sparse_kd.py)."
            )
        if demo.uses_demo(config):
            config = demo.resolved(config)  # Builds the demo's data, tokenizers and models on first use.
        sparse_kd.write_teacher_logits(config, workdir, method_settings(config.method).teacher_data)


def cli() -> None:
    config_file.exit_on_unknown_override(sys.argv)
    app.run(main)


if __name__ == "__main__":
    cli()
