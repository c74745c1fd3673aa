"""Distillation methods, one small module each, and the registry the engine uses.

A method module defines ``Settings`` (a frozen dataclass: its fields, defaults
and help lines; :mod:`jdistill.methods.settings`) and
``make(settings, facts) -> Method`` (:mod:`jdistill.methods.base`). The
registry below maps ``config.method.name`` to the pair; the run config's
``method`` group is built from the settings class (:func:`method_config`), so
no other file lists a method's settings. ``docs/adding_a_method.md`` walks
through adding one.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import ml_collections

from jdistill.methods import distillm, distillm2, dskd, dskd_cma, eta, feature_kd, gkd, imitkd, kd, logit_std_kd, mined
from jdistill.methods import minillm, multi_teacher, online_kd, relation_kd, self_distill, seqkd, sft, sparse_kd
from jdistill.methods import speculative_kd, uld
from jdistill.methods.base import DataContext, DataSpec, Method, ModelFacts, ModelView, StepContext
from jdistill.methods.settings import describe, from_config, to_config


class Registered(NamedTuple):
    """A method as the registry knows it: its settings class and its factory."""

    settings: type
    make: Callable[..., Method]


METHODS: dict[str, Registered] = {
    "sft": Registered(sft.Settings, sft.make),
    "kd": Registered(kd.Settings, kd.make),
    "logit_std_kd": Registered(logit_std_kd.Settings, logit_std_kd.make),
    "dskd": Registered(dskd.Settings, dskd.make),
    "dskd_cma": Registered(dskd_cma.Settings, dskd_cma.make),
    "uld": Registered(uld.Settings, uld.make),
    "mined": Registered(mined.Settings, mined.make),
    "eta": Registered(eta.Settings, eta.make),
    "seqkd": Registered(seqkd.Settings, seqkd.make),
    "gkd": Registered(gkd.Settings, gkd.make),
    "imitkd": Registered(imitkd.Settings, imitkd.make),
    "distillm": Registered(distillm.Settings, distillm.make),
    "distillm2": Registered(distillm2.Settings, distillm2.make),
    "speculative_kd": Registered(speculative_kd.Settings, speculative_kd.make),
    "minillm": Registered(minillm.Settings, minillm.make),
    "feature_kd": Registered(feature_kd.Settings, feature_kd.make),
    "relation_kd": Registered(relation_kd.Settings, relation_kd.make),
    "online_kd": Registered(online_kd.Settings, online_kd.make),
    "self_distill": Registered(self_distill.Settings, self_distill.make),
    "sparse_kd": Registered(sparse_kd.Settings, sparse_kd.make),
    "multi_teacher": Registered(multi_teacher.Settings, multi_teacher.make),
}


def registered(name: str) -> Registered:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"Unknown method.name {name!r}; choose one of {sorted(METHODS)}.") from None


def method_config(name: str) -> ml_collections.ConfigDict:
    """The ``method`` config group of method ``name``: its name and every setting at its default."""
    config = to_config(registered(name).settings())
    config.name = name
    return config


def method_settings(config: ml_collections.ConfigDict):
    """The settings instance a ``method`` config group describes (checked)."""
    fields = {key: config[key] for key in config.keys() if key != "name"}
    return from_config(registered(config.name).settings, ml_collections.ConfigDict(fields))


def make_method(config: ml_collections.ConfigDict, facts: ModelFacts = ModelFacts()) -> Method:
    """Builds the method a ``method`` config group names, with its settings, for a run's ``facts``."""
    return registered(config.name).make(method_settings(config), facts)


def cross_vocabulary_methods() -> list[str]:
    """The registered methods that distil across different teacher and student tokenizers."""
    return [name for name, entry in METHODS.items() if entry.make(entry.settings()).cross_vocabulary]


def settings_help(name: str) -> list[tuple[str, object, str]]:
    """``(config key, default, help)`` of every setting of method ``name``."""
    return describe(registered(name).settings)


__all__ = ["METHODS", "DataContext", "DataSpec", "Method", "ModelFacts", "ModelView", "Registered", "StepContext",
           "cross_vocabulary_methods", "make_method", "method_config", "method_settings", "registered", "settings_help"]
