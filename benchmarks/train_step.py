"""Train-step throughput: jdistill's jitted KD step vs an equivalent PyTorch step.

Both sides run the same models (one HF directory per model, loaded by each
framework), the same loss (0.5 CE + 0.5 forward KL over response tokens, the
teacher frozen) and AdamW, on the same batch, in one run.

    python benchmarks/train_step.py                 # tiny and GPT-2 shapes
    python benchmarks/train_step.py --shapes tiny --rounds 5 --steps 10

Both steps are built and compiled first, then timed in alternating rounds
(jdistill, PyTorch, jdistill, ...) so that load from other jobs on a shared
machine falls on both; the table gives the median seconds per step of each.

Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import functools
import platform
import tempfile
import time

import jax
import numpy as np

SHAPES = {
    # name: (teacher GPT-2 config, student GPT-2 config, vocabulary, batch, seq_len)
    "tiny": (dict(n_layer=2, n_embd=128, n_head=4), dict(n_layer=2, n_embd=64, n_head=4), 1024, 8, 128),
    "gpt2-medium→small": (
        dict(n_layer=24, n_embd=1024, n_head=16), dict(n_layer=12, n_embd=768, n_head=12), 50257, 2, 128,
    ),
}


def make_hf_dirs(root, teacher_kw, student_kw, vocab):
    import torch
    import transformers

    torch.manual_seed(0)
    dirs = []
    for name, kw in (("teacher", teacher_kw), ("student", student_kw)):
        config = transformers.GPT2Config(vocab_size=vocab, n_positions=1024, **kw)
        model = transformers.GPT2LMHeadModel(config)
        path = f"{root}/{name}"
        model.save_pretrained(path, safe_serialization=True)
        dirs.append(path)
    return dirs


def batch_arrays(batch, seq_len, vocab, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (batch, seq_len)).astype(np.int32)
    loss_mask = np.zeros((batch, seq_len), np.float32)
    loss_mask[:, seq_len // 4 : -1] = 1.0  # a prompt quarter, then the response
    return {
        "input_ids": ids,
        "attention_mask": np.ones((batch, seq_len), bool),
        "targets": np.roll(ids, -1, axis=1),
        "loss_mask": loss_mask,
    }


def jdistill_stepper(teacher_dir, student_dir, batch, compiler_options="auto", teacher_layers="auto",
                     attention="auto", **method_overrides):
    """A warmed-up (compiled) callable running one jdistill KD step; returns the loss.

    ``compiler_options``, ``teacher_layers`` and ``attention``: as
    ``train.xla_options``, ``teacher.layers`` and ``student.attention`` /
    ``teacher.attention`` (the engine's step uses the same).
    """
    from flax import nnx

    from jdistill import models
    from jdistill.engine import compiler_options as compiler_options_lib
    from jdistill.engine import defaults, teacher_layout
    from jdistill.engine.optimizer import make_optimizer
    from jdistill.engine.train_step import StepSpec, init_train_state, train_step
    from jdistill.methods import make_method

    student = models.load_pretrained(student_dir, dtype="float32", attention_impl=attention)
    teacher = models.load_pretrained(teacher_dir, dtype="float32", attention_impl=attention)
    config = defaults.base_config("kd")
    config.method.vocab_size = student.config.vocab_size
    for key, value in method_overrides.items():
        config.method[key] = value
    config.optimizer.learning_rate = 1e-5
    method = make_method(config.method)
    optimizer = make_optimizer(config.optimizer, total_steps=1000)
    student_graphdef, student_params = nnx.split(student)
    teacher_graphdef, teacher_params = nnx.split(teacher)
    spec = StepSpec(method=method, optimizer=optimizer, student_graphdef=student_graphdef,
                    teacher_graphdef=teacher_graphdef, grad_accum=1, total_steps=1000)
    if teacher_layout.use_per_layer(teacher_layers, method, spec.teacher_source, teacher_has_lora=False):
        mesh = models.make_mesh(-1, 1, 1)
        teacher_params, _ = teacher_layout.to_per_layer(
            teacher_params, models.state_shardings(teacher_params, mesh), teacher.config.num_layers)
    holder = {"state": init_train_state(student_params, {}, optimizer, seed=0)}
    step = jax.jit(functools.partial(train_step, spec=spec), donate_argnums=0,
                   compiler_options=compiler_options_lib.step_compiler_options(compiler_options))
    device_batch = jax.device_put(batch)

    def one_step():
        holder["state"], metrics = step(holder["state"], teacher_params, device_batch)
        return float(jax.block_until_ready(metrics["loss"]))

    one_step()  # compile
    return one_step


def torch_stepper(teacher_dir, student_dir, batch):
    """A warmed-up callable running the same step in PyTorch; returns the loss."""
    import torch
    import torch.nn.functional as F
    import transformers

    teacher = transformers.AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    student = transformers.AutoModelForCausalLM.from_pretrained(student_dir).train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5, weight_decay=0.0)
    ids = torch.tensor(batch["input_ids"], dtype=torch.long)
    attention = torch.tensor(batch["attention_mask"], dtype=torch.long)
    targets = torch.tensor(batch["targets"], dtype=torch.long)
    mask = torch.tensor(batch["loss_mask"])

    def one_step():
        with torch.no_grad():
            teacher_logits = teacher(ids, attention_mask=attention).logits
        logits = student(ids, attention_mask=attention).logits
        log_q = F.log_softmax(logits.float(), -1)
        log_p = F.log_softmax(teacher_logits.float(), -1)
        ce = -(log_q.gather(-1, targets[..., None])[..., 0] * mask).sum() / mask.sum()
        kd = ((log_p.exp() * (log_p - log_q)).sum(-1) * mask).sum() / mask.sum()
        loss = 0.5 * ce + 0.5 * kd
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        return float(loss.detach())

    one_step()  # warm-up
    return one_step


def interleaved_seconds(steppers: dict, rounds: int, steps_per_round: int, warmup: int = 1) -> dict:
    """Median seconds per step of each stepper, timed in alternating rounds (fair on a shared machine).

    Each round first runs ``warmup`` untimed steps: the first step after the
    other framework's round is slower for both (its allocator touches memory
    the other one has just released), by up to 2 s at the GPT-2 shape.
    """
    times = {name: [] for name in steppers}
    for _ in range(rounds):
        for name, one_step in steppers.items():
            for _ in range(warmup):
                one_step()
            start = time.perf_counter()
            for _ in range(steps_per_round):
                one_step()
            times[name].append((time.perf_counter() - start) / steps_per_round)
    return {name: (float(np.median(t)), t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--rounds", type=int, default=0, help="alternating timed rounds (default: 5 tiny, 4 GPT-2)")
    parser.add_argument("--steps", type=int, default=0, help="timed steps per round (default: 10 tiny, 2 GPT-2)")
    parser.add_argument("--fused", default="", help="jdistill's method.fused setting (default: the method's)")
    parser.add_argument("--compiler-options", default="auto", help="jdistill's train.xla_options setting")
    parser.add_argument("--teacher-layers", default="auto", help="jdistill's teacher.layers setting")
    parser.add_argument("--attention", default="auto", help="both models' attention implementation")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps at the start of every round")
    args = parser.parse_args()

    import torch

    print(f"machine: {platform.machine()}, {jax.device_count()} x {jax.devices()[0].device_kind}; "
          f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)\n")
    print("| shape (teacher → student) | vocab | batch × seq | timed steps (each) | jdistill tokens/s | "
          "PyTorch tokens/s | speed-up |")
    print("|---|---:|---|---:|---:|---:|---:|")
    overrides = {"fused": args.fused} if args.fused else {}
    for name in args.shapes:
        teacher_kw, student_kw, vocab, batch_size, seq_len = SHAPES[name]
        rounds = args.rounds or (5 if name == "tiny" else 4)
        steps = args.steps or (10 if name == "tiny" else 2)
        with tempfile.TemporaryDirectory() as root:
            teacher_dir, student_dir = make_hf_dirs(root, teacher_kw, student_kw, vocab)
            batch = batch_arrays(batch_size, seq_len, vocab)
            steppers = {"jdistill": jdistill_stepper(teacher_dir, student_dir, batch, args.compiler_options,
                                                     args.teacher_layers, args.attention, **overrides),
                        "torch": torch_stepper(teacher_dir, student_dir, batch)}
            seconds = interleaved_seconds(steppers, rounds, steps, args.warmup)
        tokens = batch_size * seq_len
        jd, pt = seconds["jdistill"][0], seconds["torch"][0]
        print(f"| {name} | {vocab} | {batch_size} × {seq_len} | {rounds * steps} | {tokens / jd:,.1f} | "
              f"{tokens / pt:,.1f} | {pt / jd:.2f}× |", flush=True)
        for key, (_, per_round) in seconds.items():
            print(f"<!-- {name} {key} s/step per round: {', '.join(f'{t:.3f}' for t in per_round)} -->", flush=True)


if __name__ == "__main__":
    main()
