"""Command-line config handling that ml_collections leaves to the caller.

``ml_collections.config_flags`` reports a misspelt ``--config.key=value``, or
an unknown preset after the colon of ``--config=configs/<name>.py:<preset>``,
with a traceback; :func:`exit_on_unknown_override` loads the config first
and exits with a message that names the valid keys (or presets).
"""

from __future__ import annotations

import inspect
import os
import runpy
import sys
from typing import Sequence

from jdistill.engine.defaults import unknown_key_message


def config_spec(argv: Sequence[str]) -> str | None:
    """The value of ``--config`` (``path`` or ``path:preset``)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def config_path(argv: Sequence[str]) -> str | None:
    spec = config_spec(argv)
    return None if spec is None else spec.split(":", 1)[0]


def config_preset(argv: Sequence[str]) -> str | None:
    """The text after the colon of ``--config=path:preset`` (``None`` without one)."""
    spec = config_spec(argv)
    return spec.split(":", 1)[1] if spec is not None and ":" in spec else None


def load_config(path: str, preset: str | None = None):
    """``get_config()`` (or ``get_config(preset)``) of the config file at ``path``, as ``--config=`` loads it."""
    get_config = runpy.run_path(path)["get_config"]
    if preset is None:
        return get_config()
    if not inspect.signature(get_config).parameters:
        raise ValueError(f"{path} has no presets (its get_config takes no argument): use --config={path}.")
    return get_config(preset)


def config_name(argv: Sequence[str]) -> str:
    path = config_path(argv)
    return os.path.splitext(os.path.basename(path))[0] if path else "run"


# ``--config.help``: print every field of the config with its value and description, and exit (jdistill.main).
HELP_KEY = "help"


def override_keys(argv: Sequence[str]) -> list[str]:
    keys = []
    for arg in argv:
        if arg.startswith("--config.") or arg.startswith("--noconfig."):
            body = arg.split("config.", 1)[1]
            keys.append(body.split("=", 1)[0])
    return keys


def exit_on_unknown_override(argv: Sequence[str]) -> None:
    path = config_path(argv)
    keys = [key for key in override_keys(argv) if key != HELP_KEY]
    preset = config_preset(argv)
    if path is None or (not keys and preset is None) or not os.path.exists(path):
        return  # config_flags reports a missing --config or file itself.
    try:
        config = load_config(path, preset)
    except ValueError as error:
        sys.stderr.write(f"jdistill: {error}\n")
        sys.exit(2)
    for key in keys:
        message = unknown_key_message(config, key)
        if message:
            sys.stderr.write(f"jdistill: {message}\n")
            sys.exit(2)
