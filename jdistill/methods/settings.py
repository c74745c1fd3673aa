"""How a method declares its settings: a frozen dataclass with a default and a help line per field.

A method module defines ``Settings`` (usually extending one of the shared bases
below) and ``make(settings, facts) -> Method``. The run config's ``method``
group is built from the settings class (:func:`to_config`), so every field
can be overridden on the command line (``--config.method.skew_alpha=0.2``),
and read back into the dataclass before the method is made
(:func:`from_config`), which is where each field's range is checked.

Fields are declared with :func:`setting`, which keeps the help line next to
the default (``--config.method.<field>`` documentation, :func:`describe`)::

    @dataclasses.dataclass(frozen=True)
    class Settings(KDSettings):
        projector_init: str = setting("default", "'default' (uniform) | 'pseudo_inverse' (DSKDv2).")

        def __post_init__(self):
            super().__post_init__()
            check_choice("projector_init", self.projector_init, ("default", "pseudo_inverse"))

Nested groups are dataclass-valued fields (``setting(factory=SamplingSettings, ...)``)
and become nested config groups (``--config.method.sampling.temperature``).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Callable, Iterable

import ml_collections

from jdistill import losses

_HELP = "help"


def setting(default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable | None = None):  # noqa: A002
    """A settings field with its default (or a ``factory`` for a nested group) and one line of help."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={_HELP: help})
    return dataclasses.field(default=default, metadata={_HELP: help})


def field_help(settings_cls: type, name: str) -> str:
    return next(f.metadata.get(_HELP, "") for f in dataclasses.fields(settings_cls) if f.name == name)


def to_config(settings) -> ml_collections.ConfigDict:
    """A (nested) ConfigDict holding every field of a settings instance."""
    config = ml_collections.ConfigDict()
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        config[f.name] = to_config(value) if dataclasses.is_dataclass(value) else value
    return config


def _nested_type(settings_cls: type, name: str):
    hints = typing.get_type_hints(settings_cls)
    kind = hints.get(name)
    return kind if isinstance(kind, type) and dataclasses.is_dataclass(kind) else None


def from_config(settings_cls: type, config, *, prefix: str = "method."):
    """The settings instance a config group describes; missing fields keep their defaults.

    An unknown key is an error naming the valid ones (a setting of another
    method, say); the dataclass's own checks then run (``__post_init__``).
    """
    names = [f.name for f in dataclasses.fields(settings_cls)]
    values = {}
    for key in config.keys():
        if key not in names:
            hint = difflib.get_close_matches(key, names, n=1)
            suggestion = f" Did you mean '{prefix}{hint[0]}'?" if hint else ""
            raise ValueError(
                f"'{prefix}{key}' is not a setting of {settings_cls.__module__}.{settings_cls.__qualname__}."
                f"{suggestion} Its settings: {', '.join(names)}."
            )
        value = config[key]
        nested = _nested_type(settings_cls, key)
        if nested is not None:
            value = value if isinstance(value, nested) else from_config(nested, value, prefix=f"{prefix}{key}.")
        values[key] = value
    return settings_cls(**values)


def describe(settings_cls: type, prefix: str = "method.") -> list[tuple[str, Any, str]]:
    """``(dotted name, default, help)`` of every field, nested groups flattened."""
    rows = []
    defaults = settings_cls()
    for f in dataclasses.fields(settings_cls):
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            rows.extend(describe(type(value), f"{prefix}{f.name}."))
        else:
            rows.append((f"{prefix}{f.name}", value, f.metadata.get(_HELP, "")))
    return rows


# ----------------------------------------------------------------------------- checks


def check_choice(name: str, value, allowed: Iterable, *, prefix: str = "method.") -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        choices = " | ".join(repr(a) for a in allowed)
        raise ValueError(f"{prefix}{name} must be one of {choices}, got {value!r}.")


def check_range(name: str, value, low=None, high=None, *, prefix: str = "method.", low_open: bool = False) -> None:
    """``low <= value <= high`` (``low < value`` with ``low_open``); the error names the field and range."""
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        if low is not None and high is not None:
            bounds = f"lie in {'(' if low_open else '['}{low:g}, {high:g}]"
        elif low is not None:
            bounds = f"be {'>' if low_open else '>='} {low:g}"
        else:
            bounds = f"be <= {high:g}"
        raise ValueError(f"{prefix}{name} must {bounds}, got {value}.")


# ----------------------------------------------------------------------------- shared bases

FUSED_MODES = ("auto", "on", "off")


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """What every method computing token losses over a vocabulary reads."""

    vocab_size: int = setting(0, "Vocabulary rows the losses compare; 0 = the student tokenizer's size.")
    fused: str = setting("auto", "Chunked losses from hidden states + heads, no [tokens, V] logits: 'auto'|'on'|'off'.")
    fused_min_vocab: int = setting(65536, "With fused='auto', the vocabulary size from which the fused path is used.")
    fused_memory_mb: int = setting(0, "Memory budget of one fused-loss chunk (sets the chunk size); 0 = 1/32 of device memory, >= 512.")

    def __post_init__(self):
        check_choice("fused", self.fused, FUSED_MODES)
        check_range("vocab_size", self.vocab_size, 0)
        check_range("fused_memory_mb", self.fused_memory_mb, 0)


@dataclasses.dataclass(frozen=True)
class DivergenceSettings(LossSettings):
    """A divergence between the teacher's and the student's softened distributions."""

    divergence: str = setting("forward_kl", "Any jdistill.losses divergence name.")
    temperature: float = setting(1.0, "Divides student and teacher logits in the divergence (no tau^2).")
    skew_alpha: float = setting(0.1, "alpha of skew_forward_kl / skew_reverse_kl (DistiLLM).")
    jsd_beta: float = setting(0.5, "beta of generalized_jsd (0 = forward KL, 1 = reverse KL).")
    akl_mu: float = setting(0.5, "mu of adaptive_kl (the teacher-mass share of the head).")

    def __post_init__(self):
        super().__post_init__()
        check_choice("divergence", self.divergence, sorted(losses.DIVERGENCES))
        check_range("temperature", self.temperature, 0.0, low_open=True)
        check_range("skew_alpha", self.skew_alpha, 0.0, 1.0)
        check_range("jsd_beta", self.jsd_beta, 0.0, 1.0)
        check_range("akl_mu", self.akl_mu, 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class MixSettings(LossSettings):
    """``(1 - kd_rate) · CE + kd_rate · KD``: the gold cross-entropy mixed with a distillation term."""

    kd_rate: float = setting(0.5, "Weight of the distillation term; 1 - kd_rate weighs the gold CE.")

    def __post_init__(self):
        super().__post_init__()
        check_range("kd_rate", self.kd_rate, 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class KDSettings(DivergenceSettings, MixSettings):
    """The gold CE mixed with a divergence between softened teacher and student distributions."""


@dataclasses.dataclass(frozen=True)
class RolloutSettings:
    """How generated training responses are sampled (on-policy methods' ``method.sampling``)."""

    temperature: float = setting(0.8, "Sampling temperature of generated training responses.")
    top_p: float = setting(0.95, "Nucleus threshold of that sampling (1 = off).")
    top_k: int = setting(0, "Top-k filter of that sampling; 0 = off.")
    max_new_tokens: int = setting(0, "Response length limit; 0 = data.max_len - data.max_prompt_len.")

    def __post_init__(self):
        check_range("sampling.temperature", self.temperature, 0.0)
        check_range("sampling.top_p", self.top_p, 0.0, 1.0, low_open=True)
        check_range("sampling.top_k", self.top_k, 0)
        check_range("sampling.max_new_tokens", self.max_new_tokens, 0)
