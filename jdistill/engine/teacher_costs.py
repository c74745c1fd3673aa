"""What the frozen teachers of a run cost: parameter memory, forward FLOPs and forward time per step.

Measured once at setup for runs with several teachers (a method with
``Method.teacher_list``), on the shape of the first training batch:

* parameter memory: the teacher's parameter count and bytes on device (its
  ``teacher.param_dtype``), summed over every array;
* forward FLOPs per step: XLA's cost analysis of the compiled teacher forward
  on the whole global batch (every micro-batch of a step together);
* forward time per step: the median wall time of that compiled forward over a
  few calls after a warm-up (blocking until the outputs are ready).

The numbers go to the run log and the report's summary.
"""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np
from flax import nnx


def parameter_footprint(params) -> tuple[int, int]:
    """``(parameter count, bytes)`` of a parameter tree (every array leaf)."""
    leaves = [x for x in jax.tree.leaves(params) if hasattr(x, "shape")]
    count = sum(int(np.prod(x.shape)) for x in leaves)
    size = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in leaves)
    return count, size


def _flops(compiled) -> float | None:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


def forward_cost(graphdef, params, input_ids, attention_mask, call: dict, *, repeats: int = 3) -> dict:
    """``{'flops': float | None, 'seconds': float}`` of one compiled teacher forward on these arrays."""

    def forward(state, ids, mask):
        return nnx.merge(graphdef, state)(ids, mask, **call)

    compiled = jax.jit(forward).lower(params, input_ids, attention_mask).compile()
    jax.block_until_ready(compiled(params, input_ids, attention_mask))  # warm-up
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        jax.block_until_ready(compiled(params, input_ids, attention_mask))
        times.append(time.perf_counter() - start)
    return {"flops": _flops(compiled), "seconds": statistics.median(times)}


def describe(count: int, size: int, cost: dict) -> str:
    flops = "n/a" if cost.get("flops") is None else f"{cost['flops'] / 1e9:.3f} GFLOP"
    return (f"{count / 1e6:.3f}M parameters, {size / 2**20:.1f} MiB; forward {flops}, "
            f"{1e3 * cost['seconds']:.1f} ms per step")


def teacher_costs(teachers, batch: dict, prefixes, call: dict, names) -> dict[str, str]:
    """``{'teacher <k> (<name>)': description}`` for each ``(graphdef, params)`` of ``teachers``.

    Args:
      teachers: ``(graphdef, params)`` per teacher (params already on device).
      batch: a global batch on device (the first training batch).
      prefixes: per teacher, the prefix of the batch arrays it reads.
      call: the forward's keyword arguments (the method's ``teacher_call``).
      names: per teacher, what to call it (its path).
    """
    out = {}
    for k, ((graphdef, params), prefix, name) in enumerate(zip(teachers, prefixes, names)):
        count, size = parameter_footprint(params)
        ids, mask = batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"]
        cost = forward_cost(graphdef, params, ids, mask, call)
        out[f"teacher {k} ({name})"] = describe(count, size, cost) + f" (batch {ids.shape[0]}x{ids.shape[1]})"
    return out
