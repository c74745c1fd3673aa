"""Shared fixtures of the model tests: tiny random HF checkpoints and batches.

Every checkpoint is a randomly initialised transformers model built from a
tiny config and written with ``save_pretrained`` (safetensors). Checkpoints
are created once per session and shared by the test modules.
"""

import functools

import jax
import numpy as np
import pytest
import torch
from flax import nnx
from tests.models.hf_cases import VOCAB


@pytest.fixture(scope="session")
def padded_batch():
    """``(ids, mask)`` of shape ``[4, 12]``: unpadded, left- and right-padded rows."""
    rng = np.random.RandomState(0)
    ids = rng.randint(3, VOCAB, size=(4, 12)).astype(np.int32)
    mask = np.ones((4, 12), np.int32)
    mask[1, :5] = 0  # left padding
    mask[2, 9:] = 0  # right padding
    mask[3, :2] = 0  # left padding
    ids = np.where(mask == 1, ids, 0).astype(np.int32)
    return ids, mask


def positions_from_mask(mask: np.ndarray) -> np.ndarray:
    """The position ids jdistill derives by default, for the torch reference."""
    return np.maximum(np.cumsum(mask, axis=-1) - 1, 0)


@pytest.fixture(scope="session")
def torch_forward():
    """``torch_forward(model, ids, mask, **kw)``: the transformers outputs."""

    def forward(model, ids, mask, **kwargs):
        with torch.no_grad():
            return model(
                torch.tensor(ids, dtype=torch.long),
                attention_mask=torch.tensor(mask, dtype=torch.long),
                position_ids=torch.tensor(positions_from_mask(mask), dtype=torch.long),
                **kwargs,
            )

    return forward


@functools.partial(
    jax.jit,
    static_argnums=(0,),
    static_argnames=("output_hidden_states", "output_attentions", "return_logits", "logits_dtype"),
)
def _jit_forward(graphdef, state, ids, mask, positions, cache, **flags):
    model = nnx.merge(graphdef, state)
    return model(ids, attention_mask=mask, positions=positions, cache=cache, **flags)


@pytest.fixture(scope="session")
def forward():
    """``forward(model, ids, mask=None, *, positions=None, cache=None, **flags)``, jitted.

    Eager calls re-compile the layer scan every time; the tests run the
    model the way training code does, through ``jax.jit``.
    """

    def run(model, ids, mask=None, *, positions=None, cache=None, **flags):
        graphdef, state = nnx.split(model)
        return _jit_forward(graphdef, state, ids, mask, positions, cache, **flags)

    return run
