"""Model FLOPs utilisation and tokens/s of the distillation train step, for a stated teacher/student pair.

    python benchmarks/mfu.py                       # Qwen2.5-1.5B -> Qwen2.5-0.5B shapes, 2,048 tokens
    python benchmarks/mfu.py --pair tiny --steps 5 # a CPU-sized check
    python benchmarks/mfu.py --seq-len 4096 --batch 4 --peak-tflops 989

Random weights in the named shapes (no download). One optimizer step of
vanilla KD (forward KL, the fused chunked loss from 65,536 vocabulary rows
on) runs the teacher forward (bf16 weights and activations) and the student
forward and backward (float32 master weights, bf16 activations on an
accelerator) with AdamW, jitted with explicit shardings and donation, exactly
as ``python -m jdistill.main`` runs it. It prints the device, dtypes,
attention implementation and mesh, then per configuration:

* tokens/s and tokens/s per device (input tokens of the batch);
* model FLOPs per step, counted as ``6·N_s + 12·L_s·T·d_attn`` per token for the
  student (forward and backward, matmul parameters ``N_s`` excluding the
  embedding lookup, causal attention counted in full as PaLM's appendix does)
  and ``2·N_t + 4·L_t·T·d_attn`` per token for the teacher's forward;
* MFU = model FLOP/s / (devices × peak), for the whole step and for the
  student's share.

``--peak-tflops`` is the device's dense bf16 peak (H100/H200 SXM: 989); on a
CPU no peak is known and MFU is not printed. Results go to ``--out`` (JSON)
when given.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

# Shapes of the public checkpoints' config.json (random weights).
QWEN25_05B = dict(vocab_size=151936, hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2, head_dim=64,
                  mlp_dim=4864, tie_word_embeddings=True)
QWEN25_15B = dict(vocab_size=151936, hidden_size=1536, num_layers=28, num_heads=12, num_kv_heads=2, head_dim=128,
                  mlp_dim=8960, tie_word_embeddings=True)
TINY_STUDENT = dict(vocab_size=4096, hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=32,
                    mlp_dim=256, tie_word_embeddings=True)
TINY_TEACHER = dict(vocab_size=4096, hidden_size=192, num_layers=3, num_heads=6, num_kv_heads=2, head_dim=32,
                    mlp_dim=384, tie_word_embeddings=True)
PAIRS = {"qwen2.5": (QWEN25_15B, QWEN25_05B), "tiny": (TINY_TEACHER, TINY_STUDENT)}


def matmul_params(shape: dict) -> int:
    """Parameters that multiply activations: the blocks and the LM head (the embedding lookup is free)."""
    d, h, k, dh, f = (shape[key] for key in ("hidden_size", "num_heads", "num_kv_heads", "head_dim", "mlp_dim"))
    attention = d * h * dh + 2 * d * k * dh + h * dh * d
    mlp = 3 * d * f
    return shape["num_layers"] * (attention + mlp) + d * shape["vocab_size"]


def flops_per_token(shape: dict, seq_len: int, *, backward: bool) -> float:
    """``2·N`` (forward) or ``6·N`` (forward + backward), plus attention scores and values over ``seq_len``."""
    attention = 2 * 2 * shape["num_layers"] * seq_len * shape["num_heads"] * shape["head_dim"]
    factor = 3 if backward else 1
    return factor * (2 * matmul_params(shape) + attention)


def build(shape: dict, *, param_dtype: str, compute_dtype: str, seed: int, mesh):
    from jdistill import models

    config = models.DecoderConfig(model_type="qwen2", qkv_bias=True, rope_theta=1e6, max_position_embeddings=32768,
                                  init_std=0.02, param_dtype=param_dtype, dtype=compute_dtype, **shape)
    return models.create_model(config, rngs=seed, mesh=mesh)


def run_config(teacher_shape, student_shape, *, batch, seq_len, steps, compute_dtype, mesh, peak_tflops,
               fused="auto", fused_memory_mb=512, xla_options="auto", teacher_layers="auto"):
    from jdistill.engine import compiler_options, teacher_layout
    from jdistill.engine.defaults import base_config
    from jdistill.engine.optimizer import make_optimizer
    from jdistill.engine.train_step import StepSpec, init_train_state, state_shardings, train_step
    from jdistill.engine.teacher_source import FrozenTeacher
    from jdistill.methods import ModelFacts, make_method
    from jdistill.models import batch_sharding, state_shardings as model_shardings

    student = build(student_shape, param_dtype="float32", compute_dtype=compute_dtype, seed=1, mesh=mesh)
    teacher = build(teacher_shape, param_dtype=compute_dtype, compute_dtype=compute_dtype, seed=2, mesh=mesh)
    config = base_config("kd")
    config.method.fused, config.method.fused_memory_mb = fused, int(fused_memory_mb)
    method = make_method(config.method, ModelFacts(vocab_size=student_shape["vocab_size"]))
    optimizer = make_optimizer(config.optimizer, total_steps=1000)
    s_graphdef, s_params = nnx.split(student)
    t_graphdef, t_params = nnx.split(teacher)
    make_state = functools.partial(init_train_state, optimizer=optimizer, seed=0)
    shardings = state_shardings(jax.eval_shape(make_state, s_params, {}), mesh)
    state = jax.jit(make_state, out_shardings=shardings)(s_params, {})
    del student, s_params
    spec = StepSpec(method=method, optimizer=optimizer, student_graphdef=s_graphdef, teacher_graphdef=t_graphdef,
                    grad_accum=1, total_steps=1000, mesh=mesh, teacher=FrozenTeacher())
    rng = np.random.default_rng(0)
    ids = rng.integers(0, student_shape["vocab_size"], size=(batch, seq_len), dtype=np.int32)
    loss_mask = np.ones((batch, seq_len), np.float32)
    loss_mask[:, : seq_len // 4] = 0.0  # a prompt quarter, as instruction data has
    host = {"input_ids": ids, "attention_mask": np.ones((batch, seq_len), bool),
            "targets": np.roll(ids, -1, axis=1), "loss_mask": loss_mask}
    batch_shardings = {k: batch_sharding(mesh, v.ndim) for k, v in host.items()}
    device_batch = {k: jax.device_put(v, batch_shardings[k]) for k, v in host.items()}
    t_shardings = model_shardings(t_params, mesh)
    if teacher_layout.use_per_layer(teacher_layers, method, spec.teacher_source, teacher_has_lora=False):
        t_params, t_shardings = teacher_layout.to_per_layer(t_params, t_shardings, teacher.config.num_layers)
    del teacher
    step = jax.jit(functools.partial(train_step, spec=spec),
                   in_shardings=(shardings, t_shardings, batch_shardings),
                   out_shardings=(shardings, None), donate_argnums=0,
                   compiler_options=compiler_options.step_compiler_options(xla_options))
    start = time.perf_counter()
    state, metrics = step(state, t_params, device_batch)
    jax.block_until_ready(metrics)
    compile_seconds = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = step(state, t_params, device_batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    tokens = batch * seq_len
    student_flops = flops_per_token(student_shape, seq_len, backward=True) * tokens
    teacher_flops = flops_per_token(teacher_shape, seq_len, backward=False) * tokens
    devices = jax.device_count()
    row = {
        "batch": batch, "seq_len": seq_len, "tokens_per_step": tokens, "step_seconds_median": seconds,
        "step_seconds_all": times, "compile_seconds": compile_seconds, "tokens_per_s": tokens / seconds,
        "tokens_per_s_per_device": tokens / seconds / devices, "student_params_matmul": matmul_params(student_shape),
        "teacher_params_matmul": matmul_params(teacher_shape), "model_tflops_per_step": (student_flops + teacher_flops) / 1e12,
        "loss": float(metrics["loss"]), "finite": bool(metrics["finite"]),
    }
    if peak_tflops:
        peak = devices * peak_tflops * 1e12
        row["mfu"] = (student_flops + teacher_flops) / seconds / peak
        row["mfu_student_share"] = student_flops / seconds / peak
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", choices=sorted(PAIRS), default="qwen2.5")
    parser.add_argument("--seq-len", type=int, nargs="+", default=[2048])
    parser.add_argument("--batch", type=int, nargs="+", default=[8])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--compute-dtype", default=None, help="default: bfloat16 on an accelerator, float32 on CPU")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak per device (H100/H200: 989)")
    parser.add_argument("--fused", default="auto", help="method.fused: 'auto' | 'on' | 'off'")
    parser.add_argument("--fused-memory-mb", type=int, default=512, help="method.fused_memory_mb (the chunk size)")
    parser.add_argument("--xla-options", default="auto", help="train.xla_options")
    parser.add_argument("--teacher-layers", default="auto", help="teacher.layers: 'auto' | 'stacked' | 'per_layer'")
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    from jdistill import models

    platform = jax.devices()[0].platform
    compute_dtype = args.compute_dtype or ("float32" if platform == "cpu" else "bfloat16")
    peak = args.peak_tflops if platform != "cpu" else None
    mesh = models.make_mesh(-1, 1, 1)
    teacher_shape, student_shape = PAIRS[args.pair]
    from jdistill.models.attention_impl import resolve_implementation

    header = {
        "device": f"{jax.device_count()} x {jax.devices()[0].device_kind}", "platform": platform,
        "jax": jax.__version__, "pair": args.pair, "student_params": "fp32 master", "compute_dtype": compute_dtype,
        "teacher_params": compute_dtype,
        "attention": resolve_implementation("auto", dtype=jnp.dtype(compute_dtype), head_dim=student_shape["head_dim"]),
        "mesh": dict(mesh.shape), "peak_tflops_per_device": peak, "fused": args.fused,
        "fused_memory_mb": args.fused_memory_mb, "xla_options": args.xla_options,
        "teacher_layers": args.teacher_layers,
    }
    print(json.dumps(header), flush=True)
    rows = []
    for seq_len in args.seq_len:
        for batch in args.batch:
            row = run_config(teacher_shape, student_shape, batch=batch, seq_len=seq_len, steps=args.steps,
                             compute_dtype=compute_dtype, mesh=mesh, peak_tflops=peak, fused=args.fused,
                             fused_memory_mb=args.fused_memory_mb, xla_options=args.xla_options,
                             teacher_layers=args.teacher_layers)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "step_seconds_all"}), flush=True)
            if args.out:
                with open(args.out, "w") as f:
                    json.dump({"header": header, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
