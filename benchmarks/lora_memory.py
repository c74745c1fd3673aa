"""Optimizer-state bytes of full fine-tuning vs LoRA (``student.lora.rank``), from abstract shapes.

The engine's optimizer (``jdistill.engine.optimizer.make_optimizer``: AdamW
with gradient clipping, the default config) is initialised with
``jax.eval_shape`` on the student's trainable parameters: every weight for full
fine-tuning, the ``nnx.LoRAParam`` adapters for LoRA (targets: every attention
and MLP projection, the default ``student.lora.targets``). No weights are
created, so a Qwen2.5-0.5B-shaped student costs nothing to measure.

Usage::

    python benchmarks/lora_memory.py            # prints the markdown table of docs/benchmarks.md
"""

import jax
import ml_collections
from flax import nnx

import jdistill.models as jm
from jdistill.engine.defaults import base_config
from jdistill.engine.optimizer import make_optimizer
from jdistill.models import lora

MiB = 2**20

SHAPES = {
    # The demo's student (jdistill/demo/assets.py STUDENT_SHAPE, byte-level BPE vocabulary 512).
    "demo student": dict(model_type="llama", vocab_size=512, hidden_size=64, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=16, mlp_dim=192, tie_word_embeddings=True),
    # Qwen2.5-0.5B's config.json.
    "Qwen2.5-0.5B": dict(model_type="qwen2", vocab_size=151936, hidden_size=896, num_layers=24, num_heads=14,
                         num_kv_heads=2, head_dim=64, mlp_dim=4864, qkv_bias=True, tie_word_embeddings=True),
}


def nbytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def optimizer_bytes(trainable) -> int:
    optimizer = make_optimizer(ml_collections.FrozenConfigDict(base_config("kd").optimizer), 100)
    return nbytes(jax.eval_shape(optimizer.init, {"student": trainable, "method": {}}))


def abstract_model(shape: dict, rank: int):
    config = jm.DecoderConfig(**shape)

    def build():
        model = jm.Decoder(config, rngs=nnx.Rngs(0))
        if rank:
            lora.apply_lora(model, lora.LoraSpec(rank=rank), jax.random.key(0))
        return model

    return nnx.eval_shape(build)


def rows():
    out = []
    for name, shape in SHAPES.items():
        full = nnx.state(abstract_model(shape, 0))
        out.append((name, "full", nbytes(full), nbytes(full), optimizer_bytes(full)))
        for rank in (8, 64):
            _, adapters, base = lora.split(abstract_model(shape, rank))
            out.append((name, f"LoRA r={rank}", nbytes(adapters), nbytes(base), optimizer_bytes(adapters)))
    return out


def main():
    print("| student | trained | trainable params (MiB, f32) | weights (MiB) | optimizer state (MiB) |")
    print("|---|---|---:|---:|---:|")
    for name, what, trainable, weights, opt in rows():
        print(f"| {name} | {what} | {trainable / MiB:.3f} | {weights / MiB:.2f} | {opt / MiB:.3f} |")


if __name__ == "__main__":
    main()
