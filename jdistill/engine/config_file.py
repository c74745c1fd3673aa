"""Command-line config handling that ml_collections leaves to the caller.

``ml_collections.config_flags`` reports a misspelt ``--config.key=value``
with a traceback; :func:`exit_on_unknown_override` checks every override
against the config first and exits with a message that names the valid keys.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Sequence

from jdistill.engine.defaults import unknown_key_message


def config_path(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1].split(":", 1)[0]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1].split(":", 1)[0]
    return None


def config_name(argv: Sequence[str]) -> str:
    path = config_path(argv)
    return os.path.splitext(os.path.basename(path))[0] if path else "run"


def override_keys(argv: Sequence[str]) -> list[str]:
    keys = []
    for arg in argv:
        if arg.startswith("--config.") or arg.startswith("--noconfig."):
            body = arg.split("config.", 1)[1]
            keys.append(body.split("=", 1)[0])
    return keys


def exit_on_unknown_override(argv: Sequence[str]) -> None:
    path = config_path(argv)
    keys = override_keys(argv)
    if path is None or not keys or not os.path.exists(path):
        return  # config_flags reports a missing --config or file itself.
    config = runpy.run_path(path)["get_config"]()
    for key in keys:
        message = unknown_key_message(config, key)
        if message:
            sys.stderr.write(f"jdistill: {message}\n")
            sys.exit(2)
