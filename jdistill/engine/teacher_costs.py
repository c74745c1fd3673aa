"""What the frozen teachers of a run cost: parameter memory, forward FLOPs and forward time per step.

Measured once at setup for runs with several teachers (a method with
``Method.teacher_list``), on the shape of the first training batch:

* parameter memory: the teacher's parameter count and bytes on device (its
  ``teacher.param_dtype``), summed over every array;
* forward FLOPs per step: from the model's shape, on the whole global batch
  ``[B, T]`` (every micro-batch of a step together, padding included):
  ``B·T·(2·N_mm + 4·L·T·H·D_h)`` with ``N_mm`` the parameters that multiply
  activations (attention and MLP projections of every layer, and the LM
  head), the second term attention scores and values over the full padded
  length (an upper bound for a causal mask), as ``benchmarks/mfu.py`` counts.
  (XLA's own cost analysis counts the body of the scan over layers once, so it
  is not used);
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


def matmul_parameters(config) -> int:
    """Parameters that multiply activations per token: every layer's attention and MLP projections, the LM head."""
    d, heads, kv_heads, head_dim, mlp = (config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim,
                                         config.mlp_dim)
    attention = d * heads * head_dim + 2 * d * kv_heads * head_dim + heads * head_dim * d
    mlp_matrices = 3 if getattr(config, "gated_mlp", True) else 2
    return config.num_layers * (attention + mlp_matrices * d * mlp) + d * config.vocab_size


def forward_flops(config, batch: int, length: int) -> float:
    """``B·T·(2·N_mm + 4·L·T·H·D_h)``: the forward's matmul FLOPs on a ``[B, T]`` batch.

    Example:
      >>> from types import SimpleNamespace
      >>> c = SimpleNamespace(hidden_size=4, num_heads=2, num_kv_heads=1, head_dim=2, mlp_dim=8, num_layers=1,
      ...                     vocab_size=10, gated_mlp=True)
      >>> matmul_parameters(c)  # 4·2·2 + 2·4·1·2 + 2·2·4 + 3·4·8 + 4·10
      184
      >>> forward_flops(c, 1, 3)  # 3 tokens · (2·184 + 4·1·3·2·2)
      1248.0
    """
    per_token = 2 * matmul_parameters(config) + 4 * config.num_layers * length * config.num_heads * config.head_dim
    return float(batch * length * per_token)


def forward_cost(graphdef, params, input_ids, attention_mask, call: dict, *, repeats: int = 3) -> dict:
    """``{'flops': float, 'seconds': float}`` of one compiled teacher forward on these arrays."""

    def forward(state, ids, mask):
        return nnx.merge(graphdef, state)(ids, mask, **call)

    model_config = nnx.merge(graphdef, params).config
    compiled = jax.jit(forward).lower(params, input_ids, attention_mask).compile()
    jax.block_until_ready(compiled(params, input_ids, attention_mask))  # warm-up
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        jax.block_until_ready(compiled(params, input_ids, attention_mask))
        times.append(time.perf_counter() - start)
    return {"flops": forward_flops(model_config, *input_ids.shape), "seconds": statistics.median(times)}


def describe(count: int, size: int, cost: dict) -> str:
    flops = f"{cost['flops'] / 1e9:.3f} GFLOP"
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
