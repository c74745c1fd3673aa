"""Tiny stand-ins for the models a method sees: ``logits = hidden @ head``.

Every array is an explicit argument, so tests can differentiate a loss with
respect to any of them (the student's head, hidden states, embeddings, ...).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jdistill.methods.base import ModelView, StepContext


@dataclasses.dataclass(frozen=True)
class FakeModel:
    embedding_VxD: jax.Array
    head_DxV: jax.Array

    def embedding_table(self):
        return self.embedding_VxD

    def lm_head_weight(self):
        return self.head_DxV


@dataclasses.dataclass(frozen=True)
class FakeOutput:
    logits: jax.Array
    hidden_states: jax.Array


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
