"""Distillation methods, one small module each, and the registry the engine uses.

A method module exposes ``make(method_config) -> Method`` (see
:mod:`jdistill.methods.base`). ``config.method.name`` selects it here.
"""

from __future__ import annotations

from typing import Callable

import ml_collections

from jdistill.methods import dskd, dskd_cma, kd, seqkd, sft, uld
from jdistill.methods.base import DataContext, Method, ModelView, StepContext

METHODS: dict[str, Callable[[ml_collections.ConfigDict], Method]] = {
    "sft": sft.make,
    "kd": kd.make,
    "dskd": dskd.make,
    "dskd_cma": dskd_cma.make,
    "uld": uld.make,
    "seqkd": seqkd.make,
}


def make_method(config: ml_collections.ConfigDict) -> Method:
    """Builds the method named by ``config.name``."""
    try:
        factory = METHODS[config.name]
    except KeyError:
        raise ValueError(f"Unknown method.name {config.name!r}; choose one of {sorted(METHODS)}.") from None
    return factory(config)


__all__ = ["METHODS", "DataContext", "Method", "ModelView", "StepContext", "make_method"]
