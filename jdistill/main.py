"""Train a student: ``python -m jdistill.main --config=configs/<method>.py[:real] [--config.key=value ...]``.

``configs/<method>.py`` runs the built-in demo; ``configs/<method>.py:real``
is the preset for real checkpoints (:mod:`jdistill.engine.presets`).
``--config.help`` prints every field of the resolved config (overrides
applied) with its value and description, and exits. The work lives in
:mod:`jdistill.engine`; this module only parses flags.
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
_SHOW_CONFIG = flags.DEFINE_bool(
    "show_config", False, "Print every field of the config (overrides applied) with its value and description, "
    "and exit; --config.help does the same."
)
_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "On an error, print the full traceback and the libraries' logs (by default: one line "
    "naming the fix; the traceback goes to <workdir>/error.log)."
)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _SHOW_CONFIG.value:
        from jdistill.engine import config_help

        spec = config_file.config_spec(sys.argv) or "the config"
        overrides = len([k for k in config_file.override_keys(sys.argv) if k != config_file.HELP_KEY])
        title = (f"# {spec}" + (f" with {overrides} override(s)" if overrides else "") +
                 ": every field, its value and what it is (set one with --config.<key>=VALUE)")
        sys.stdout.write(config_help.render(_CONFIG.value, title=title))
        return
    verbose = _VERBOSE.value or flags.FLAGS["verbosity"].present
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Library INFO chatter (orbax) only with -v 0.
    from jdistill.engine import error_report

    if not verbose:
        error_report.quiet_library_logs()
    workdir = _WORKDIR.value or os.path.join("workdirs", config_file.config_name(sys.argv))
    with error_report.reported_errors(verbose=verbose, workdir=workdir):
        from jdistill import console, demo  # Heavy imports after flag parsing, so --help is fast.
        from jdistill.demo import comparison
        from jdistill.engine import trainer

        config = _CONFIG.value
        on_demo = demo.uses_demo(config)
        overridden = demo_inputs_overridden(config, sys.argv) if on_demo else []
        if on_demo:
            config = demo.resolved(config)  # Builds the demo's data, tokenizers and models on first use.
        result = trainer.run(config, workdir)
        if on_demo and result.final_eval:
            if overridden:
                console.info(f"the demo comparison is skipped: {', '.join(overridden)} set on the command line "
                             "(it scores the demo's own teacher and students on the demo's test split)")
            else:
                full = result.with_full_student()  # a LoRA student's base weights included
                comparison.compare(config, full, student_graphdef=full.student_graphdef)


def demo_inputs_overridden(config, argv) -> list[str]:
    """The demo's models or data the command line replaced by others (then the demo comparison does not run)."""
    from jdistill.demo.assets import PATH_FIELDS, config_value

    keys = set(config_file.override_keys(argv))
    return [field for field in PATH_FIELDS
            if field in keys and not str(config_value(config, field)).startswith("demo:")]


def cli() -> None:
    sys.argv = [_SHOW_CONFIG_FLAG if arg in _HELP_ARGS else arg for arg in sys.argv]
    config_file.exit_on_unknown_override(sys.argv)
    app.run(main)


_SHOW_CONFIG_FLAG = "--show_config"
_HELP_ARGS = (f"--config.{config_file.HELP_KEY}", f"--config.{config_file.HELP_KEY}=true",
              f"--config.{config_file.HELP_KEY}=True")


if __name__ == "__main__":
    cli()
