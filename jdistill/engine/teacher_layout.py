"""How a run's frozen teacher holds its block weights in the train step (``teacher.layers``).

* ``'stacked'``: as loaded, one ``[L, ...]`` array per weight, run by
  ``lax.scan`` (each step copies every layer's weights out of the stack);
* ``'per_layer'``: one array per layer (:mod:`jdistill.models.per_layer`),
  run as an unrolled loop that reads them in place: the GPT-2-medium teacher's
  forward on CPU goes from 0.98 s to 0.87 s (docs/benchmarks.md);
* ``'auto'``: ``'per_layer'`` on CPU where the run allows it, else ``'stacked'``.

``'per_layer'`` needs a frozen loaded teacher without LoRA, one teacher, a
method that reads no per-layer teacher outputs (hidden states of every layer,
attention probabilities) and no on-policy feed (the feed generates with the
loaded model). The run then drops the loaded model and its stacked arrays, so
the teacher's memory does not double beyond the moment of the split.
"""

from __future__ import annotations

import jax

from jdistill.engine.run_setup import ConfigError
from jdistill.engine.teacher_source import FrozenTeacher, TeacherSource
from jdistill.methods.base import Method
from jdistill.models import per_layer

LAYOUTS = ("auto", "stacked", "per_layer")
PER_LAYER_OUTPUTS = ("output_hidden_states", "output_attentions")


def per_layer_obstacle(method: Method, source: TeacherSource, teacher_has_lora: bool) -> str | None:
    """Why this run's teacher cannot take the per-layer layout, or ``None`` when it can."""
    if type(source) is not FrozenTeacher:
        return f"its teacher is not a frozen loaded checkpoint ({type(source).__name__})"
    if teacher_has_lora:
        return "the teacher carries LoRA adapters (teacher.lora)"
    if method.teacher_list:
        return f"method {method.name} runs several teachers"
    wanted = [key for key in PER_LAYER_OUTPUTS if method.teacher_call.get(key)]
    if wanted:
        return f"method {method.name} reads the teacher's per-layer outputs ({', '.join(wanted)})"
    if method.make_feed is not None:
        return f"method {method.name}'s data feed generates with the loaded teacher"
    return None


def use_per_layer(setting: str, method: Method, source: TeacherSource, teacher_has_lora: bool,
                  platform: str | None = None) -> bool:
    """Whether the step's teacher takes the per-layer layout; ``'per_layer'`` that cannot be is a ConfigError."""
    if setting not in LAYOUTS:
        raise ConfigError(f"teacher.layers must be one of {' | '.join(LAYOUTS)}; got {setting!r}.")
    if setting == "stacked":
        return False
    obstacle = per_layer_obstacle(method, source, teacher_has_lora)
    if setting == "per_layer" and obstacle:
        raise ConfigError(f"teacher.layers='per_layer' is not possible here: {obstacle}. Use 'auto' or 'stacked'.")
    return obstacle is None and (setting == "per_layer" or (platform or jax.default_backend()) == "cpu")


def to_per_layer(params, stacked_shardings, num_layers: int):
    """``(params, shardings)`` in the per-layer layout (new arrays: drop every reference to ``params``)."""
    shardings = per_layer.shardings(stacked_shardings, num_layers)
    split = jax.jit(per_layer.split, out_shardings=shardings)
    return split(params), shardings
