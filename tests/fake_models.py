"""Stand-ins for the models a method sees, with every array an explicit argument (one helper for every test).

Two kinds of "side" (one model's arrays):

* *head sides* (:func:`random_side`, :func:`view`): ``{'hidden': [B,T,d],
  'head': [d,V], 'embed': [V,d]}`` with ``logits = hidden @ head``, so tests
  can differentiate a loss with respect to the head, the hidden states or the
  embeddings;
* *decoder sides* (:func:`decoder_side`, :func:`decoder_view`): logits, every
  layer's hidden states and attention maps given directly, with a config
  (layers, width), for feature, relation and online methods.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jdistill.methods.base import ModelView, StepContext


@dataclasses.dataclass(frozen=True)
class FakeConfig:
    num_layers: int
    hidden_size: int


@dataclasses.dataclass(frozen=True)
class FakeModel:
    """A model's head and input embeddings (and a config when a method reads sizes)."""

    embedding_VxD: jax.Array
    head_DxV: jax.Array
    config: FakeConfig | None = None

    def embedding_table(self):
        return self.embedding_VxD

    def lm_head_weight(self):
        return self.head_DxV


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FakeOutput:
    """What a decoder call returns, as far as methods read it."""

    logits: jax.Array
    hidden_states: jax.Array
    all_hidden_states: jax.Array | None = None
    attention_probs: jax.Array | None = None


# ----------------------------------------------------------------------------- head sides


def view(side: dict) -> ModelView:
    """``side``: ``{'hidden': [B,T,d], 'head': [d,V], 'embed': [V,d]}``."""
    logits = side["hidden"] @ side["head"]
    return ModelView(FakeOutput(logits, side["hidden"]), FakeModel(side["embed"], side["head"]))


def random_side(key, batch, length, dim, vocab):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "hidden": jax.random.normal(k1, (batch, length, dim)),
        "head": jax.random.normal(k2, (dim, vocab)),
        "embed": jax.random.normal(k3, (vocab, dim)),
    }


def context(num_tokens, teacher_num_tokens=None) -> StepContext:
    one = jnp.ones((), jnp.float32)
    return StepContext(
        progress=one * 0.5,
        num_tokens=jnp.asarray(num_tokens, jnp.float32),
        num_sequences=one,
        teacher_num_tokens=jnp.asarray(teacher_num_tokens or num_tokens, jnp.float32),
        rng=jax.random.key_data(jax.random.key(0)),
    )


def side_arrays(ids_BxT, prompt_lens, lengths):
    """``input_ids``, ``targets``, ``loss_mask``, ``attention_mask`` like :func:`jdistill.data.collate`."""
    ids = np.asarray(ids_BxT, np.int32)
    batch, length = ids.shape
    targets = np.zeros_like(ids)
    targets[:, :-1] = ids[:, 1:]
    loss_mask = np.zeros((batch, length), np.float32)
    attention = np.zeros((batch, length), bool)
    for b, (p, n) in enumerate(zip(prompt_lens, lengths)):
        loss_mask[b, p - 1 : n - 1] = 1.0
        attention[b, :n] = True
    return {"input_ids": ids, "targets": targets, "loss_mask": loss_mask, "attention_mask": attention}


# ----------------------------------------------------------------------------- decoder sides


def decoder_side(seed: int, *, layers: int, width: int, heads: int, batch: int = 2, length: int = 5, vocab: int = 7):
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


def decoder_view(side: dict) -> ModelView:
    layers, width = side["all_hidden"].shape[0] - 1, side["all_hidden"].shape[-1]
    output = FakeOutput(side["logits"], side["all_hidden"][-1], side["all_hidden"], side["attention"])
    head = jnp.asarray(side["head"])
    return ModelView(output, FakeModel(head.T, head, FakeConfig(layers, width)))


def model_of(side: dict) -> FakeModel:
    return decoder_view(side).model


def batch_arrays(batch: int = 2, length: int = 5, vocab: int = 7, seed: int = 0) -> dict:
    """Targets and a response mask: prompt at the start, right padding in the last row."""
    rng = np.random.default_rng(seed)
    loss_mask = np.ones((batch, length), np.float32)
    loss_mask[:, :1] = 0.0
    loss_mask[-1, -2:] = 0.0
    return {"targets": rng.integers(0, vocab, size=(batch, length)).astype(np.int32), "loss_mask": loss_mask}
