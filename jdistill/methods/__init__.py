"""Distillation methods, one small module each, and the registry the engine uses.

A method module exposes ``make(method_config) -> Method`` (see
:mod:`jdistill.methods.base`). ``config.method.name`` selects it here.
"""

from __future__ import annotations

from typing import Callable

import ml_collections

from jdistill.methods import distillm, distillm2, dskd, dskd_cma, gkd, imitkd, kd, seqkd, sft, uld
from jdistill.methods import feature_kd, online_kd, relation_kd, self_distill, sparse_kd
from jdistill.methods import eta, mined
from jdistill.methods.base import DataContext, Method, ModelView, StepContext

METHODS: dict[str, Callable[[ml_collections.ConfigDict], Method]] = {
    "sft": sft.make,
    "kd": kd.make,
    "dskd": dskd.make,
    "dskd_cma": dskd_cma.make,
    "uld": uld.make,
    "mined": mined.make,
    "eta": eta.make,
    "seqkd": seqkd.make,
    "gkd": gkd.make,
    "imitkd": imitkd.make,
    "distillm": distillm.make,
    "distillm2": distillm2.make,
    "feature_kd": feature_kd.make,
    "relation_kd": relation_kd.make,
    "online_kd": online_kd.make,
    "self_distill": self_distill.make,
    "sparse_kd": sparse_kd.make,
}


def make_method(config: ml_collections.ConfigDict) -> Method:
    """Builds the method named by ``config.name``."""
    try:
        factory = METHODS[config.name]
    except KeyError:
        raise ValueError(f"Unknown method.name {config.name!r}; choose one of {sorted(METHODS)}.") from None
    return factory(config)


__all__ = ["METHODS", "DataContext", "Method", "ModelView", "StepContext", "make_method"]
