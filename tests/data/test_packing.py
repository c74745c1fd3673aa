"""Sequence packing (jdistill.data.packing): first-fit layout, segment ids, and loss/gradient equivalence.

The equivalence tests run the engine's own per-micro-batch loss
(``forward_and_loss``, teacher and student forwards through real tiny
decoders) and its gradient on one set of examples laid out twice — one
example per row (right-padded) and packed into shared rows with segment
ids — and check both against a third reference: every example run alone in
a batch of one, with the loss normalised by the same global response-token
count, the per-example losses and gradients summed.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jdistill import models
from jdistill.data import batching, packing
from jdistill.data.records import DataError
from jdistill.data.tokenize import TokenizedExample, TokenizedSide
from jdistill.data.topk_store import IDS_KEY, LOGPROBS_KEY
from jdistill.engine import train_step as ts
from jdistill.engine.optimizer import make_optimizer
from jdistill.engine import defaults
from jdistill.methods import make_method, method_config, METHODS
from jdistill.methods.base import ModelFacts, StepContext

VOCAB = 23
PAD = 0


# ---------------------------------------------------------------- layout


def test_first_fit_decreasing_by_hand():
    # Longest first: 9 opens row 0 (room 1); 7 opens row 1 (room 3); 5 opens row 2 (room 5);
    # 3 -> row 1 (room 0); 2 -> row 2 (room 3); 1 -> row 0 (room 0).
    assert packing.first_fit_decreasing([3, 9, 2, 7, 5, 1], 10) == [[1, 5], [0, 3], [2, 4]]
    with pytest.raises(ValueError, match="more than the row length"):
        packing.first_fit_decreasing([11], 10)


def test_row_count_steps_and_cap():
    assert [packing.row_count(n, 1, 32) for n in range(1, 14)] == [1, 2, 3, 4, 6, 6, 8, 8, 12, 12, 12, 12, 16]
    assert packing.row_count(3, 4, 8) == 4  # one unit of 4 rows
    assert packing.row_count(5, 4, 8) == 8  # capped at the batch size
    assert packing.row_count(30, 1, 32) == 32


def side(ids, prompt_len, spans=None) -> TokenizedSide:
    return TokenizedSide(np.asarray(ids, np.int32), prompt_len, spans)


def test_collate_packed_arrays_by_hand():
    examples = [
        TokenizedExample("a", side([1, 5, 6, 2], 2)),  # 4 tokens, response = 6, 2
        TokenizedExample("b", side([1, 7, 2], 1)),  # 3 tokens
        TokenizedExample("c", side([1, 8, 9, 10, 11, 2], 3, spans=((1, 2), (4, 6)))),  # two trained spans
    ]
    batch = packing.collate_packed(examples, buckets=(8,), pad_id=PAD)
    # First-fit decreasing at length 8: c (6) -> row 0; a (4) -> row 1; b (3) -> row 1.
    np.testing.assert_array_equal(batch["input_ids"], [[1, 8, 9, 10, 11, 2, 0, 0], [1, 5, 6, 2, 1, 7, 2, 0]])
    np.testing.assert_array_equal(batch["segment_ids"], [[1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 2, 2, 2, 0]])
    np.testing.assert_array_equal(batch["attention_mask"], batch["segment_ids"] > 0)
    # Targets never cross a segment boundary: each example's last token predicts the pad id.
    np.testing.assert_array_equal(batch["targets"], [[8, 9, 10, 11, 2, 0, 0, 0], [5, 6, 2, 0, 7, 2, 0, 0]])
    np.testing.assert_array_equal(batch["loss_mask"], [[1, 0, 0, 1, 1, 0, 0, 0], [0, 1, 1, 0, 1, 1, 0, 0]])
    assert batch["loss_mask"].dtype == np.float32 and batch["segment_ids"].dtype == np.int32


def test_collate_packed_extras_and_errors():
    examples = [
        TokenizedExample("a", side([1, 5, 2], 1), extras={"w": np.array([[1.0], [2.0], [3.0]], np.float32)}),
        TokenizedExample("b", side([1, 6], 1), extras={"w": np.array([[4.0], [5.0]], np.float32)}),
    ]
    batch = packing.collate_packed(examples, buckets=(8,), pad_id=PAD)
    np.testing.assert_array_equal(batch["w"][..., 0], [[1, 2, 3, 4, 5, 0, 0, 0]])
    bad = dataclasses.replace(examples[1], extras={"v": np.zeros((2, 1), np.float32)})
    with pytest.raises(DataError, match="same per-position arrays"):
        packing.collate_packed([examples[0], bad], buckets=(8,), pad_id=PAD)
    crossed = dataclasses.replace(examples[0], teacher=side([1, 2], 1))
    with pytest.raises(DataError, match="cannot be packed"):
        packing.collate_packed([crossed], buckets=(8,), pad_id=PAD)


def test_padding_fraction_by_hand():
    lengths = [30, 10, 20, 5, 64, 3, 3, 1]
    # Unpacked, batches of 4 at buckets (32, 64): [30,10,20,5] -> 4 x 32 = 128 slots for 65 tokens;
    # [64,3,3,1] -> 4 x 64 = 256 slots for 71 tokens.
    unpacked = packing.padding_fraction(lengths, batch_size=4, buckets=(32, 64), packed=False)
    assert unpacked == pytest.approx(1 - 136 / 384)
    # Packed: [30], [20, 10], [5] -> 3 rows x 32; [64], [3, 3, 1] -> 2 rows x 64.
    packed = packing.padding_fraction(lengths, batch_size=4, buckets=(32, 64), packed=True)
    assert packed == pytest.approx(1 - 136 / (96 + 128))


def test_batch_source_packs_the_same_examples():
    rng = np.random.default_rng(0)
    examples = [TokenizedExample(str(i), side(rng.integers(3, VOCAB, n), int(n) // 2))
                for i, n in enumerate(rng.integers(4, 30, 24))]
    plain = batching.BatchSource(examples, batch_size=8, seed=3, buckets=(16, 32), pad_id=PAD)
    packed = batching.BatchSource(examples, batch_size=8, seed=3, buckets=(16, 32), pad_id=PAD, packed=True,
                                  row_multiple=2)
    for step in range(3):
        position = batching.DataPosition(1, step)
        a, b = plain.batch_at(position), packed.batch_at(position)
        assert b["input_ids"].shape[0] % 2 == 0 and b["input_ids"].shape[0] <= 8
        # The same tokens and the same trained targets, only laid out differently.
        assert sorted(a["input_ids"][a["attention_mask"]].tolist()) == sorted(b["input_ids"][b["attention_mask"]].tolist())
        assert sorted(a["targets"][a["loss_mask"] > 0].tolist()) == sorted(b["targets"][b["loss_mask"] > 0].tolist())
    assert packed.padding_fraction() < plain.padding_fraction()


def test_trained_segment_count_matches_examples():
    examples = [TokenizedExample("a", side([1, 5, 6, 2], 2)), TokenizedExample("b", side([1, 7, 2], 1)),
                TokenizedExample("c", side([1, 8, 9, 10, 11, 2], 3, spans=((1, 2), (4, 6)))),
                TokenizedExample("d", side([1, 4], 2, spans=()))]  # no trained token: not counted
    batch = packing.collate_packed(examples, buckets=(8,), pad_id=PAD)
    assert float(ts.trained_segment_count(jnp.asarray(batch["loss_mask"]), jnp.asarray(batch["segment_ids"]))) == 3.0


# ---------------------------------------------------------------- equivalence


def tiny_decoder(seed, hidden):
    config = models.DecoderConfig(
        model_type="llama", vocab_size=VOCAB, hidden_size=hidden, num_layers=1, num_heads=4, num_kv_heads=2,
        head_dim=hidden // 4, mlp_dim=2 * hidden, pad_token_id=PAD, init_std=0.3,
    )
    return models.create_model(config, rngs=seed)


def random_examples(seed, n=6, topk=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(4, 15))
        prompt = int(rng.integers(1, length - 1))
        extras = {}
        if topk:
            extras[IDS_KEY] = np.stack([rng.permutation(VOCAB)[:topk] for _ in range(length)]).astype(np.int32)
            logits = rng.normal(size=(length, VOCAB))
            log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
            extras[LOGPROBS_KEY] = np.take_along_axis(log_p, extras[IDS_KEY], axis=-1).astype(np.float32)
        out.append(TokenizedExample(str(i), side(rng.integers(1, VOCAB, length), prompt), extras=extras))
    return out


CASES = {
    "sft": dict(name="sft"),
    "kd_forward_kl": dict(name="kd"),
    "kd_generalized_jsd": dict(name="kd", divergence="generalized_jsd", jsd_beta=0.3, temperature=1.5),
    "dskd": dict(name="dskd"),
    "sparse_kd": dict(name="sparse_kd"),  # stored top-k targets: packed extras
}
SLOW_CASES = ("dskd", "sparse_kd")


def step_spec(case):
    config = method_config(case["name"])
    for key, value in case.items():
        if key != "name":
            config[key] = value
    method = make_method(config, ModelFacts(vocab_size=VOCAB))
    student, teacher = tiny_decoder(1, 16), tiny_decoder(2, 24)
    s_graph, s_params = nnx.split(student)
    t_graph, t_params = nnx.split(teacher)
    method_params = method.init_params(jax.random.key(5), student, teacher) if method.init_params else {}
    spec = ts.StepSpec(method=method, optimizer=make_optimizer(defaults.base_config(case["name"]).optimizer, 10),
                       student_graphdef=s_graph, teacher_graphdef=t_graph if method.needs_teacher else None,
                       grad_accum=1, total_steps=10)
    return spec, {"student": s_params, "method": method_params}, t_params if method.needs_teacher else None


def loss_and_grads_fn(spec):
    """Jitted ``(loss, grads)`` of the engine's micro-batch loss, normalised by a given global token count."""

    @jax.jit
    def run(trainable, teacher_params, batch, num_tokens):
        ctx = StepContext(progress=jnp.zeros(()), num_tokens=num_tokens, num_sequences=jnp.ones(()),
                          teacher_num_tokens=num_tokens, rng=jax.random.key_data(jax.random.key(0)))
        (loss, _), grads = jax.value_and_grad(ts.forward_and_loss, has_aux=True)(
            trainable, teacher_params, batch, ctx, spec
        )
        return loss, grads

    def call(trainable, teacher_params, batch, num_tokens):
        loss, grads = run(trainable, teacher_params, batch, jnp.asarray(num_tokens, jnp.float32))
        return float(loss), jax.tree.map(lambda g: np.asarray(g, np.float64), grads)

    return call


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CASES else c for c in CASES]
)
def test_packed_loss_and_gradients_equal_unpacked(case):
    assert METHODS[CASES[case]["name"]].make(METHODS[CASES[case]["name"]].settings()).packable
    spec, trainable, teacher_params = step_spec(CASES[case])
    loss_and_grads = loss_and_grads_fn(spec)
    examples = random_examples(7, topk=4 if case == "sparse_kd" else 0)
    unpacked = batching.collate(examples, buckets=(16,), pad_id=PAD)
    # row_multiple = 6 keeps the packed batch at the unpacked shape (one compilation for every layout).
    packed = packing.collate_packed(examples, buckets=(16,), pad_id=PAD, row_multiple=len(examples))
    assert packed["input_ids"].shape == unpacked["input_ids"].shape
    assert packed["attention_mask"].any(axis=-1).sum() < len(examples)  # the examples do share rows
    assert packed["segment_ids"].max() > 1
    num_tokens = float(unpacked["loss_mask"].sum())
    assert float(packed["loss_mask"].sum()) == num_tokens

    loss_u, grads_u = loss_and_grads(trainable, teacher_params, unpacked, num_tokens)
    loss_p, grads_p = loss_and_grads(trainable, teacher_params, packed, num_tokens)
    # Reference: each example alone in a row of its own (a batch of one), normalised by the same global count.
    loss_r, grads_r = 0.0, None
    for example in examples:
        alone = batching.collate([example] + [None] * (len(examples) - 1), buckets=(16,), pad_id=PAD)
        loss_e, grads_e = loss_and_grads(trainable, teacher_params, alone, num_tokens)
        loss_r += loss_e
        grads_r = grads_e if grads_r is None else jax.tree.map(np.add, grads_r, grads_e)

    assert loss_r > 0
    np.testing.assert_allclose(loss_u, loss_r, rtol=2e-5)
    np.testing.assert_allclose(loss_p, loss_r, rtol=2e-5)
    leaves_r = jax.tree.leaves(grads_r)
    assert sum(float(np.abs(g).sum()) for g in leaves_r) > 0
    for g_u, g_p, g_r in zip(jax.tree.leaves(grads_u), jax.tree.leaves(grads_p), leaves_r):
        scale = float(np.abs(g_r).max()) + 1e-12
        np.testing.assert_allclose(g_u, g_r, atol=2e-5 * scale, rtol=2e-4)
        np.testing.assert_allclose(g_p, g_r, atol=2e-5 * scale, rtol=2e-4)


@pytest.mark.slow
def test_train_step_counts_sequences_per_segment():
    spec, trainable, teacher_params = step_spec(CASES["kd_forward_kl"])
    examples = random_examples(3)
    state = ts.init_train_state(trainable["student"], trainable["method"], spec.optimizer, seed=0)
    out = {}
    for name, batch in (("unpacked", batching.collate(examples, buckets=(16,), pad_id=PAD)),
                        ("packed", packing.collate_packed(examples, buckets=(16,), pad_id=PAD))):
        _, metrics = jax.jit(functools.partial(ts.train_step, spec=spec))(state, teacher_params, batch)
        out[name] = metrics
        assert int(ts._counts(batch)[1]) == len(examples)
    np.testing.assert_allclose(float(out["packed"]["loss"]), float(out["unpacked"]["loss"]), rtol=2e-5)
    np.testing.assert_allclose(float(out["packed"]["grad_norm"]), float(out["unpacked"]["grad_norm"]), rtol=1e-4)
    assert float(out["packed"]["response_tokens"]) == float(out["unpacked"]["response_tokens"])
