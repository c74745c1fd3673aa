"""The repository's own ``configs/<name>.py`` files, loaded the way ``--config=`` loads them."""

import importlib.util
import os

import ml_collections

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load_repo_config(name: str) -> ml_collections.ConfigDict:
    """``get_config()`` of ``configs/<name>.py``: a fresh ConfigDict on every call."""
    spec = importlib.util.spec_from_file_location(f"config_{name}", os.path.join(CONFIGS_DIR, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()
