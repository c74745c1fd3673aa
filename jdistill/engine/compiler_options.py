"""XLA compiler options of the jitted train step (``train.xla_options``).

``"auto"`` gives jdistill's per-platform defaults (:data:`PLATFORM_DEFAULTS`),
``"none"`` none, and ``"key=value,key=value"`` exactly those options (values
``true``/``false``, integers and floats are converted; anything else stays a
string). The options go to ``jax.jit(..., compiler_options=...)``, so they
apply to the train step only and never to other JAX code in the process
(unlike ``XLA_FLAGS``).

On CPU the default turns on copy insertion by region analysis: XLA then
drops copies that ``lax.scan`` loops (the stacked decoder layers, their
gradients) would otherwise make of their loop-carried buffers. At the
GPT-2-medium -> GPT-2-small step on the 2-core development machine it cuts
the step from 2.86 s to 2.68 s (docs/benchmarks.md, "Train step").

A jaxlib that does not know an ``auto`` option (options come and go between
XLA releases) is probed once per process with a one-line function: the
option is then left out, with a warning that names it. Options given
explicitly are not probed; an unknown one fails the step's compilation with
XLA's message.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp

# platform -> options that ``"auto"`` turns on there.
PLATFORM_DEFAULTS: dict[str, dict[str, bool | int | float | str]] = {
    "cpu": {"xla_cpu_copy_insertion_use_region_analysis": True},
}


def parse(setting: str) -> dict[str, bool | int | float | str]:
    """``"a=true,b=4"`` -> ``{"a": True, "b": 4}``; raises ``ValueError`` on a malformed entry."""
    options: dict[str, bool | int | float | str] = {}
    for entry in (part.strip() for part in setting.split(",")):
        if not entry:
            continue
        key, sep, raw = entry.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key or not raw:
            raise ValueError(
                f"train.xla_options entry {entry!r} is not key=value; use 'auto', 'none' or "
                "comma-separated key=value pairs such as 'xla_cpu_copy_insertion_use_region_analysis=true'."
            )
        options[key] = _value(raw)
    return options


def _value(raw: str) -> bool | int | float | str:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for convert in (int, float):
        try:
            return convert(raw)
        except ValueError:
            pass
    return raw


def step_compiler_options(setting: str, platform: str | None = None) -> dict[str, bool | int | float | str]:
    """The compiler options for ``setting`` on ``platform`` (default: JAX's default backend)."""
    setting = setting.strip()
    if setting == "none" or not setting:
        return {}
    if setting != "auto":
        return parse(setting)
    platform = platform or jax.default_backend()
    return {key: value for key, value in PLATFORM_DEFAULTS.get(platform, {}).items() if _supported(key, value)}


@functools.cache
def _supported(key: str, value) -> bool:
    """Does this jaxlib accept ``key=value``? (One tiny compilation per option and process.)"""
    try:
        jax.jit(lambda x: x + 1, compiler_options={key: value}).lower(jnp.zeros((), jnp.float32)).compile()
    except jax.errors.JaxRuntimeError as error:
        logging.warning("XLA option %s=%s is not supported by this jaxlib and is left out: %s", key, value, error)
        return False
    return True
