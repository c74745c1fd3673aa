"""Stand-ins for the decoder outputs a feature/relation/online method sees, with explicit arrays.

Every array (logits, all hidden states, attention maps) is an argument, so tests
can differentiate a method's loss with respect to any of them.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from jdistill.methods.base import ModelView


@dataclasses.dataclass(frozen=True)
class FakeConfig:
    num_layers: int
    hidden_size: int


@dataclasses.dataclass(frozen=True)
class FakeDecoder:
    config: FakeConfig
    head_DxV: jax.Array

    def lm_head_weight(self):
        return self.head_DxV

    def embedding_table(self):
        return self.head_DxV.T


@dataclasses.dataclass(frozen=True)
class FakeDecoderOutput:
    logits: jax.Array
    hidden_states: jax.Array
    all_hidden_states: jax.Array
    attention_probs: jax.Array


jax.tree_util.register_dataclass(FakeDecoderOutput, data_fields=["logits", "hidden_states", "all_hidden_states",
                                                                 "attention_probs"], meta_fields=[])


def random_side(seed: int, *, layers: int, width: int, heads: int, batch: int = 2, length: int = 5, vocab: int = 7):
    """``{'all_hidden', 'attention', 'logits', 'head'}`` numpy arrays of one model."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(layers, batch, heads, length, length)) * 1.5
    scores = np.where(np.tril(np.ones((length, length), bool)), scores, -np.inf)
    attention = np.exp(scores - scores.max(-1, keepdims=True))
    attention /= attention.sum(-1, keepdims=True)
    return {
        "all_hidden": rng.normal(size=(layers + 1, batch, length, width)).astype(np.float32),
        "attention": attention.astype(np.float32),
        "logits": (rng.normal(size=(batch, length, vocab)) * 2.0).astype(np.float32),
        "head": rng.normal(size=(width, vocab)).astype(np.float32),
    }


def view(side: dict) -> ModelView:
    layers, width = side["all_hidden"].shape[0] - 1, side["all_hidden"].shape[-1]
    output = FakeDecoderOutput(side["logits"], side["all_hidden"][-1], side["all_hidden"], side["attention"])
    return ModelView(output, FakeDecoder(FakeConfig(layers, width), side["head"]))


def model_of(side: dict) -> FakeDecoder:
    return view(side).model


def batch_arrays(batch: int = 2, length: int = 5, vocab: int = 7, seed: int = 0) -> dict:
    """Targets and a response mask: prompt at the start, right padding in the last row."""
    rng = np.random.default_rng(seed)
    loss_mask = np.ones((batch, length), np.float32)
    loss_mask[:, :1] = 0.0
    loss_mask[-1, -2:] = 0.0
    return {"targets": rng.integers(0, vocab, size=(batch, length)).astype(np.int32), "loss_mask": loss_mask}
