"""Fixtures of the sampler tests: a tiny random decoder, padded prompts, HF checkpoints.

The tiny decoder is created directly (no checkpoint); the parity tests build
random transformers models from the configs of ``tests/models/hf_cases.py``
and save them as safetensors, once per session.
"""

import contextlib

import jax
import numpy as np
import pytest

import jdistill.models as jm

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"

TINY_VOCAB = 32
TINY_CONFIG = jm.DecoderConfig(
    model_type="llama",
    vocab_size=TINY_VOCAB,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    mlp_dim=64,
    init_std=0.3,  # Spread-out logits: distinct greedy choices, non-trivial sampling.
)


def random_model(config: jm.DecoderConfig, seed: int = 0) -> jm.Decoder:
    """A decoder with NumPy-drawn normal weights (norm scales 1).

    Cheaper than ``create_model``, whose on-device initialisation compiles
    several programs.
    """
    from flax import nnx

    from jdistill.models.param_paths import map_with_param_path

    rng = np.random.default_rng(seed)
    abstract = nnx.eval_shape(lambda: jm.create_model(config, rngs=0))
    graphdef, state = nnx.split(abstract)

    def draw(path, leaf):
        if path.endswith("norm/scale"):
            return jax.numpy.ones(leaf.shape, leaf.dtype)
        return jax.numpy.asarray(rng.normal(0.0, config.init_std, leaf.shape).astype(leaf.dtype))

    return nnx.merge(graphdef, map_with_param_path(draw, state))


@pytest.fixture(scope="session")
def tiny_model():
    return random_model(TINY_CONFIG)


@pytest.fixture(scope="session")
def padded_prompts():
    """``(ids, mask)`` ``[4, 9]``: rows with 9, 4, 7 and 1 real tokens, left-padded."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1, TINY_VOCAB, size=(4, 9)).astype(np.int32)
    mask = np.ones((4, 9), bool)
    mask[1, :5] = False
    mask[2, :2] = False
    mask[3, :8] = False
    return np.where(mask, ids, 0).astype(np.int32), mask


@contextlib.contextmanager
def count_backend_compiles():
    """Yields a one-element list holding the number of XLA compilations so far."""
    count = [0]

    def listener(event, duration_secs, **kwargs):
        del duration_secs, kwargs
        if event == BACKEND_COMPILE_EVENT:
            count[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


