"""Config presets: the demo (``configs/<name>.py``) and real checkpoints (``configs/<name>.py:real``).

The text after the colon of ``--config=configs/<name>.py:<preset>`` reaches the
config's ``get_config(arg)`` (ml_collections' parameterised configs). Every
config in ``configs/`` takes:

* nothing (or ``demo``): the built-in demo, offline, with settings sized for
  its tiny models (a learning rate of 3e-3, 64-token sequences, 400 steps);
* ``real``: real Hugging Face checkpoints. :func:`real_checkpoints` replaces
  every demo path and every tiny-model setting: the model and data paths have
  no default (a run that leaves one unset stops before loading anything,
  naming ``--config.teacher.path`` etc.: :func:`jdistill.engine.config_checks.check_required`),
  sequences are 512 tokens with 256-token prompts, the teacher is held in
  bfloat16, the run lasts a number of epochs rather than a fixed number of
  steps, and the learning rate, batch size and epochs are the ones of the
  paper scripts each config's docstring quotes.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from jdistill.engine.defaults import base_config

PRESETS = ("demo", "real")

# Paths a real run must be given: the ones no run can do without (the teacher's only for methods that load one).
REQUIRED_PATHS = ("student.path", "data.train_files")

# Paths a real run may leave empty (tokenizers: the model's; evaluation files: held out from the training data).
_OPTIONAL_PATHS = ("teacher.tokenizer", "student.tokenizer", "data.eval_files")

# Settings the demo sizes for its tiny models that return to the shared defaults (engine/defaults.py).
_SHARED_DEFAULTS = ("train.checkpoint_every", "eval.batch_size", "logging.every")


def preset(arg: str | None) -> str:
    """The preset ``arg`` names (``None`` or ``''``: the demo); an unknown name is an error listing the choices."""
    name = (arg or "demo").strip()
    if name not in PRESETS:
        raise ValueError(
            f"Unknown config preset {arg!r}: use --config=configs/<name>.py for the demo or "
            "--config=configs/<name>.py:real for real checkpoints."
        )
    return name


def _set(config: ml_collections.ConfigDict, dotted: str, value) -> None:
    group, key = dotted.rsplit(".", 1)
    node = config
    for part in group.split("."):
        node = node[part]
    node[key] = value


def _get(config: ml_collections.ConfigDict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def _clear_demo_paths(config: ml_collections.ConfigDict) -> None:
    for key, value in list(config.items()):
        if isinstance(value, ml_collections.ConfigDict):
            _clear_demo_paths(value)
        elif isinstance(value, str) and value.startswith("demo:"):
            config[key] = ""


def real_checkpoints(
    config: ml_collections.ConfigDict,
    *,
    learning_rate: float,
    batch_size: int,
    epochs: int,
    teacher: bool = True,
    max_len: int = 512,
    max_prompt_len: int = 256,
    eval_every: int = -1,
) -> ml_collections.ConfigDict:
    """Turns a demo config into the config of a run on real checkpoints (in place; also returned).

    Args:
      config: a config from ``demo.apply_defaults(base_config(...))`` with its
        method settings.
      learning_rate, batch_size, epochs: the paper scripts' values (the run
        lasts ``epochs``: ``train.steps`` is 0).
      teacher: whether the method loads a teacher checkpoint (``teacher.path``
        is then required; otherwise it is empty).
      max_len, max_prompt_len: sequence and prompt lengths in tokens.
      eval_every: ``eval.every`` (-1: once per epoch, as the papers evaluate).

    The paths that must be given are ml_collections placeholders (``None``
    until set on the command line); every ``demo:`` path is cleared.
    """
    _clear_demo_paths(config)
    for key in _OPTIONAL_PATHS:
        _set(config, key, "")
    for key in REQUIRED_PATHS + (("teacher.path",) if teacher else ()):
        _set(config, key, config_dict.placeholder(str))
    if not teacher:
        config.teacher.path = ""
    config.teacher.param_dtype = "bfloat16"
    config.teacher.compute_dtype = "bfloat16"
    config.data.max_len = int(max_len)
    config.data.max_prompt_len = int(max_prompt_len)
    config.optimizer.learning_rate = float(learning_rate)
    config.optimizer.warmup_steps = 0
    config.train.steps = 0
    config.train.epochs = int(epochs)
    config.train.batch_size = int(batch_size)
    config.eval.every = int(eval_every)
    config.eval.max_new_tokens = int(max_len) - int(max_prompt_len)
    shared = base_config(config.method.name)
    for key in _SHARED_DEFAULTS:
        _set(config, key, _get(shared, key))
    return config
