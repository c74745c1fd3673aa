"""Every kernel of ``jdistill.losses``, jitted over sharded inputs, equals its single-device result.

The mesh is ``(data=2, fsdp=2, tensor=2)`` over the 8 CPU devices, set with
``jax.set_mesh``, once with ``AxisType.Auto`` axes (GSPMD propagation) and
once with ``AxisType.Explicit`` axes (the default of ``jax.make_mesh``: every
array's type carries its sharding and ambiguous operations must say theirs).
Tokens are sharded over ``('data', 'fsdp')``; the vocabulary, hidden features
and attention heads over ``tensor``. Values and gradients are compared.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from jdistill import losses
from tests.losses.test_cross_model_attention import PARAMS, _inputs as cma_inputs

TOK = ("data", "fsdp")
B, T, V, DS, DT = 4, 6, 32, 8, 12
P_LOGITS = P(TOK, None, "tensor")  # [B, T, V]
P_TOKENS = P(TOK, None)  # [B, T]
P_ROWS = P(TOK)  # [B]
P_HIDDEN = P(TOK, None, None)  # [B, T, d] for the fused kernels
P_FEATURES = P(TOK, None, "tensor")  # [B, T, d] with the features split
P_HEAD = P(None, "tensor")  # [d, V]
P_HEADS = P(TOK, "tensor", None, None)  # [B, H, T, S]


def _data():
    rng = np.random.default_rng(0)
    f = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    d = dict(s=f(B, T, V) * 2, t=f(B, T, V) * 2, hs=f(B, T, DS), ht=f(B, T, DT), ws=f(DS, V), wt=f(DT, V))
    d["t"][..., 3] = -np.inf  # a vocabulary entry no model may use
    d["s"][..., 3] = -np.inf
    d["mask"] = rng.random((B, T)) < 0.7
    d["labels"] = rng.integers(0, V, (B, T)).astype(np.int32)
    d["ids"] = np.argsort(-d["t"], -1)[..., :5].astype(np.int32)
    d["topk_lp"] = np.take_along_axis(np.asarray(jax.nn.log_softmax(d["t"])), d["ids"], -1)
    d["alpha"] = np.array([0.1, 0.05, 0.02, 0.01], np.float32)
    d["flag"] = np.array([0, 1, 0, 1], np.float32)
    d["lp_t"], d["lp_s"] = d["topk_lp"][..., 0].copy(), d["topk_lp"][..., 1].copy() - 0.3
    d["probs_s"] = np.asarray(jax.nn.softmax(f(B, 4, T, T)))
    d["probs_t"] = np.asarray(jax.nn.softmax(f(B, 2, T, T)))
    return d


D = _data()

VT = 24  # the teacher's vocabulary in the cross-vocabulary kernels


def _cross_vocabulary_data():
    rng = np.random.default_rng(1)
    f = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    d = dict(zs=f(B, T, V) * 2, zt=f(B, T, VT) * 2)  # finite logits: the span merges want finite log-probs
    d["lq"], d["lp"] = (np.asarray(jax.nn.log_softmax(d[k])) for k in ("zs", "zt"))
    d["qs"], d["pt"] = np.exp(d["lq"]), np.exp(d["lp"])
    d["labels"] = rng.integers(0, V, (B, T)).astype(np.int32)
    d["t_labels"] = rng.integers(0, VT, (B, T)).astype(np.int32)
    d["aligned"] = (rng.random((B, T)) < 0.6).astype(np.float32)
    d["index"] = rng.integers(0, T, (B, T)).astype(np.int32)  # a teacher position per student position
    d["s2t"] = np.where(rng.random(V) < 0.75, rng.integers(0, VT, V), -1).astype(np.int32)  # sigma: V_s -> V_t
    d["projected"] = np.where(d["s2t"] >= 0, d["zt"][..., np.maximum(d["s2t"], 0)], -np.inf).astype(np.float32)
    d["span"] = np.array([[0, 0, 1, 2, 2, 3], [0, 1, 1, 1, 2, 3], [1, 0, 0, 2, 2, 2], [0, 1, 2, 3, 4, 5]], np.int32)
    d["start"] = np.array([[0, 0, 1, 3, 3, 4], [0, 1, 1, 1, 2, 4], [2, 0, 0, 3, 3, 3], [0, 1, 2, 3, 4, 5]], np.int32)
    d["end"] = d["start"] + np.array([[1, 1, 2, 1, 1, 2], [1, 1, 1, 1, 2, 1], [1, 2, 2, 1, 1, 1], [1, 1, 1, 1, 1, 1]],
                                     np.int32)
    d["valid"] = rng.random((B, T)) < 0.8
    d["rows_lq"], d["rows_c"] = d["lq"].reshape(B * T, V), d["lq"][..., 0].reshape(B * T)  # [B*T, V], [B*T]
    d["rows_seg"] = rng.integers(0, 7, B * T).astype(np.int32)  # 8 segments: segment 7 stays empty
    return d


X = _cross_vocabulary_data()
MATCHED_S, MATCHED_T = np.array([0, 3, 5, 9, 17, 30]), np.array([8, 1, 2, 0, 23, 11])  # K = 6 matched pairs
P_ROW_VOCAB = P(TOK, "tensor")  # [B*T, V]: per-row segment kernels, rows over the token axes
_CMA = {k: np.concatenate([v, v[::-1]], axis=0) for k, v in cma_inputs(6).items()}  # batch 4
_CMA_KEYS = sorted(_CMA)


def _cma(*values):
    return losses.cross_model_attention(PARAMS, **dict(zip(_CMA_KEYS, values, strict=True)))


def _fused(**kw):
    return functools.partial(losses.fused_kd_loss, chunk_size=8, **kw)


FUSED_ARGS = (D["hs"], D["ws"], D["ht"], D["wt"], D["mask"])
FUSED_SPECS = (P_HIDDEN, P_HEAD, P_HIDDEN, P_HEAD, P_TOKENS)

# name -> (kernel, inputs, their PartitionSpecs, indices of the inputs to differentiate)
CASES = {
    **{
        name: (kernel, (D["s"], D["t"]), (P_LOGITS, P_LOGITS), (0, 1))
        for name, kernel in losses.DIVERGENCES.items()
    },
    "generalized_jsd_of_log_probs": (
        lambda a, b: losses.generalized_jsd_of_log_probs(jax.nn.log_softmax(a), jax.nn.log_softmax(b), beta=0.3),
        (D["s"], D["t"]), (P_LOGITS, P_LOGITS), (0, 1),
    ),
    "log_probs": (losses.log_probs, (D["s"],), (P_LOGITS,), (0,)),
    "mixture_log_probs": (
        lambda a, b: losses.mixture_log_probs([a, b], [0.3, 0.7], temperature=2.0),
        (D["s"], D["t"]), (P_LOGITS, P_LOGITS), (0, 1),
    ),
    "sparse_forward_kl": (
        losses.sparse_forward_kl, (D["s"], D["ids"], D["topk_lp"]), (P_LOGITS, P_HIDDEN, P_HIDDEN), (0,)
    ),
    "token_cross_entropy": (losses.token_cross_entropy, (D["s"], D["labels"]), (P_LOGITS, P_TOKENS), (0,)),
    "token_logprobs": (losses.token_logprobs, (D["s"], D["labels"]), (P_LOGITS, P_TOKENS), (0,)),
    "fused_token_logprobs": (
        functools.partial(losses.fused_token_logprobs, chunk_size=8), (D["hs"], D["ws"], D["labels"]),
        (P_HIDDEN, P_HEAD, P_TOKENS), (),
    ),
    "fused_kd_loss": (_fused(), FUSED_ARGS, FUSED_SPECS, (0, 1, 2, 3)),
    "fused_kd_loss[adaptive_kl]": (_fused(divergence="adaptive_kl"), FUSED_ARGS, FUSED_SPECS, (0, 1, 2, 3)),
    "fused_kd_loss[padded head]": (_fused(vocab_size=24), FUSED_ARGS, FUSED_SPECS, (0, 1, 2, 3)),
    "fused_kd_loss[fsdp head]": (
        _fused(), FUSED_ARGS, (P_HIDDEN, P("fsdp", "tensor"), P_HIDDEN, P("fsdp", "tensor"), P_TOKENS), (0, 1, 2, 3)
    ),
    "fused_kd_loss[vd heads]": (
        _fused(head_layout="vd"), (D["hs"], D["ws"].T.copy(), D["ht"], D["wt"].T.copy(), D["mask"]),
        (P_HIDDEN, P("tensor", None), P_HIDDEN, P("tensor", None), P_TOKENS), (0, 1, 2, 3),
    ),
    "fused_kd_loss[alpha per sequence]": (
        lambda *a: _fused(divergence="skew_forward_kl", alpha=a[5])(*a[:5]),
        (*FUSED_ARGS, D["alpha"]), (*FUSED_SPECS, P_ROWS), (0, 1, 2, 3),
    ),
    "fused_cross_entropy": (
        functools.partial(losses.fused_cross_entropy, chunk_size=8), (D["hs"], D["ws"], D["labels"], D["mask"]),
        (P_HIDDEN, P_HEAD, P_TOKENS, P_TOKENS), (0, 1),
    ),
    "fused_cald": (
        lambda hs, ht, m, ws, wt, a: losses.fused_cald(
            hs, ht, m, hs[::-1], ht[::-1], m[::-1], ws, wt, alpha_t=a, alpha_s=a, chunk_size=8
        ),
        (D["hs"], D["ht"], D["mask"], D["ws"], D["wt"], D["alpha"]),
        (P_HIDDEN, P_HIDDEN, P_TOKENS, P_HEAD, P_HEAD, P_ROWS), (0, 3),
    ),
    "cald": (
        lambda s, t, m, a: losses.cald(s, t, m, t, s, m, alpha_t=a, alpha_s=a, beta=0.6),
        (D["s"], D["t"], D["mask"], D["alpha"]), (P_LOGITS, P_LOGITS, P_TOKENS, P_ROWS), (0, 1),
    ),
    "cald_token_divergence": (
        lambda s, t, f, a: losses.cald_token_divergence(s, t, on_student_response=f, alpha=a),
        (D["s"], D["t"], D["flag"], D["alpha"]), (P_LOGITS, P_LOGITS, P_ROWS, P_ROWS), (0, 1),
    ),
    "mean_token_probability": (losses.mean_token_probability, (D["lp_t"], D["mask"]), (P_TOKENS,) * 2, (0,)),
    "probability_gap": (losses.probability_gap, (D["lp_t"], D["lp_s"], D["mask"]), (P_TOKENS,) * 3, (0, 1)),
    "curriculum_alpha": (
        functools.partial(losses.curriculum_alpha, reference_gap=0.05), (D["lp_t"], D["lp_s"], D["mask"]),
        (P_TOKENS,) * 3, (),
    ),
    "token_mean": (losses.token_mean, (D["lp_t"], D["mask"]), (P_TOKENS,) * 2, (0,)),
    "sequence_mean": (losses.sequence_mean, (D["lp_t"], D["mask"]), (P_TOKENS,) * 2, (0,)),
    "feature_mse": (losses.feature_mse, (D["hs"], D["hs"][::-1].copy()), (P_FEATURES,) * 2, (0, 1)),
    "feature_cosine_distance": (
        losses.feature_cosine_distance, (D["hs"], D["hs"][::-1].copy()), (P_FEATURES,) * 2, (0, 1)
    ),
    "fitnets_hint_loss": (losses.fitnets_hint_loss, (D["hs"], D["hs"][::-1].copy()), (P_FEATURES,) * 2, (0, 1)),
    "cosine_similarity_matrix": (losses.cosine_similarity_matrix, (D["hs"],), (P_FEATURES,), (0,)),
    "masked_mean_pool": (losses.masked_mean_pool, (D["hs"], D["mask"]), (P_FEATURES, P_TOKENS), (0,)),
    "token_relation_distance": (
        losses.token_relation_distance, (D["hs"], D["ht"], D["mask"]), (P_FEATURES, P_FEATURES, P_TOKENS), (0, 1)
    ),
    "sample_relation_distance": (
        losses.sample_relation_distance, (D["hs"][:, 0].copy(), D["ht"][:, 0].copy(), D["mask"][:, 0].copy()),
        (P(TOK, "tensor"), P(TOK, "tensor"), P_ROWS), (0, 1),
    ),
    **{
        name: (getattr(losses, name), (D["hs"], D["ht"], D["mask"]), (P_FEATURES, P_FEATURES, P_TOKENS), (0, 1))
        for name in ("rkd_distance_loss", "rkd_angle_loss", "similarity_preserving_loss")
    },
    "attention_kl": (losses.attention_kl, (D["probs_s"][:, :2].copy(), D["probs_t"]), (P_HEADS,) * 2, (0, 1)),
    "average_head_groups": (functools.partial(losses.average_head_groups, num_groups=2), (D["probs_s"],),
                            (P_HEADS,), (0,)),
    "attention_transfer[mean]": (
        functools.partial(losses.attention_transfer, heads="mean"), (D["probs_s"], D["probs_t"]), (P_HEADS,) * 2,
        (0, 1),
    ),
    "attention_transfer[mapped]": (
        functools.partial(losses.attention_transfer, heads="mapped"), (D["probs_s"], D["probs_t"]),
        (P_HEADS,) * 2, (0, 1),
    ),
    "minilm_attention_loss": (
        losses.minilm_attention_loss, (D["probs_s"][:, :2].copy(), D["probs_t"]), (P_HEADS,) * 2, (0, 1)
    ),
    "cross_model_attention": (
        _cma,
        tuple(_CMA[k] for k in _CMA_KEYS),
        tuple(P(TOK, None, "tensor") if _CMA[k].ndim == 3 else P_TOKENS for k in _CMA_KEYS),
        tuple(i for i, k in enumerate(_CMA_KEYS) if k.endswith("hidden")),
    ),
    # Cross-vocabulary kernels: the student's vocabulary has V entries, the teacher's VT.
    "sorted_probs_desc": (functools.partial(losses.sorted_probs_desc, temperature=2.0), (X["zs"],), (P_LOGITS,), (0,)),
    "pad_vocabulary": (functools.partial(losses.pad_vocabulary, size=V + 8), (X["pt"],), (P_LOGITS,), (0,)),
    "sorted_l1_distance": (losses.sorted_l1_distance, (X["qs"], X["pt"]), (P_LOGITS,) * 2, (0, 1)),
    "uld_distance": (
        functools.partial(losses.uld_distance, temperature=2.0), (X["zs"], X["zt"]), (P_LOGITS,) * 2, (0, 1)
    ),
    "gather_positions": (losses.gather_positions, (X["zt"], X["index"]), (P_LOGITS, P_TOKENS), (0,)),
    "project_teacher_logits": (losses.project_teacher_logits, (X["zt"], X["s2t"]), (P_LOGITS, P("tensor")), (0,)),
    "mined_kd": (
        functools.partial(losses.mined_kd, temperature=2.0), (X["zs"], X["projected"], X["labels"], X["aligned"]),
        (P_LOGITS, P_LOGITS, P_TOKENS, P_TOKENS), (0, 1),
    ),
    **{
        f"merge_spans[{how}]": (
            functools.partial(losses.merge_spans, num_segments=T + 1, how=how), (X["lq"], X["labels"], X["span"]),
            (P_LOGITS, P_TOKENS, P_TOKENS), (0,),
        )
        for how in losses.SPAN_MERGES
    },
    "segment_log_mean_exp": (
        functools.partial(losses.segment_log_mean_exp, num_segments=8), (X["rows_lq"], X["rows_seg"]),
        (P_ROW_VOCAB, P_ROWS), (0,),
    ),
    **{
        f"segment_chain_rule[{base}]": (
            functools.partial(losses.segment_chain_rule, num_segments=8, base=base),
            (X["rows_lq"], X["rows_c"], X["rows_seg"]), (P_ROW_VOCAB, P_ROWS, P_ROWS), (0, 1),
        )
        for base in ("last", "first")
    },
    "teacher_segments": (
        functools.partial(losses.teacher_segments, teacher_length=T, dump=T),
        (X["span"], X["start"], X["end"], X["valid"]), (P_TOKENS,) * 4, (),
    ),
    "gold_distance": (
        functools.partial(losses.gold_distance, matched_student_K=MATCHED_S, matched_teacher_K=MATCHED_T, beta=0.4),
        (X["lq"], X["lp"]), (P_LOGITS,) * 2, (0, 1),
    ),
    "bucket_distance": (
        lambda lq, lp: losses.bucket_distance(lq, lp, MATCHED_S, MATCHED_T),
        (X["lq"], X["lp"]), (P_LOGITS,) * 2, (0, 1),
    ),
}
# Public names that are not kernels on arrays.
NOT_KERNELS = {
    "get_divergence", "get_feature_distance", "get_reduction", "init_cross_model_attention_params",
    "fused_chunk_size", "CrossModelAttentionOutput",
    "cma_param_shapes",  # returns the projectors' (d_in, d_out) shapes from two ints: no arrays
    "unmatched_ids",  # host-side numpy on static ids (the unmatched part of a vocabulary), never traced
}


def _scalar(out):
    """A scalar touching every floating output (finite entries), weighted so outputs do not cancel."""
    leaves = [x for x in jax.tree.leaves(out) if jnp.issubdtype(x.dtype, jnp.floating)]
    return sum(jnp.sum(jnp.where(jnp.isfinite(x), x, 0.0) * (i + 1)) for i, x in enumerate(leaves))


def _value_and_grads(kernel, diff):
    def run(*args):
        if not diff:
            return kernel(*args), None

        def scalar(*args):
            out = kernel(*args)
            return _scalar(out), out

        (_, out), grads = jax.value_and_grad(scalar, argnums=diff, has_aux=True)(*args)
        return out, grads

    return jax.jit(run)


@functools.lru_cache(maxsize=None)
def _unsharded(name):
    kernel, args, _, diff = CASES[name]
    return jax.device_get(_value_and_grads(kernel, diff)(*args))


@pytest.fixture(scope="module", params=[AxisType.Auto, AxisType.Explicit], ids=["auto", "explicit"])
def mesh(request):
    assert jax.device_count() == 8, "tests/conftest.py should provide 8 CPU devices"
    return jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(request.param,) * 3)


def test_every_public_kernel_is_covered():
    kernels = {name for name in losses.__all__ if callable(getattr(losses, name)) and name not in NOT_KERNELS}
    covered = {name.split("[")[0] for name in CASES}
    assert kernels <= covered, f"add to CASES: {sorted(kernels - covered)}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_sharded_equals_single_device(mesh, name):
    kernel, args, specs, diff = CASES[name]
    want_out, want_grads = _unsharded(name)
    with jax.set_mesh(mesh):
        sharded = [jax.device_put(a, NamedSharding(mesh, spec)) for a, spec in zip(args, specs, strict=True)]
        got_out, got_grads = _value_and_grads(kernel, diff)(*sharded)
    for got, want in zip(jax.tree.leaves(got_out), jax.tree.leaves(want_out), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    for got, want in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(losses.DIVERGENCES))
def test_divergences_keep_tokens_sharded_under_explicit_axes(name):
    """Per-token values stay split over the token axes (no gather of the [tokens, V] inputs to one device)."""
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Explicit,) * 3)
    with jax.set_mesh(mesh):
        s, t = (jax.device_put(x, NamedSharding(mesh, P_LOGITS)) for x in (D["s"], D["t"]))
        out = jax.jit(losses.DIVERGENCES[name])(s, t)
        grad = jax.jit(jax.grad(lambda a, b: jnp.sum(losses.DIVERGENCES[name](a, b))))(s, t)
    assert out.sharding.spec == P(TOK, None)
    assert grad.sharding.spec == P_LOGITS


def test_fused_head_gradient_keeps_the_head_sharding_under_explicit_axes():
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Explicit,) * 3)
    with jax.set_mesh(mesh):
        args = [jax.device_put(a, NamedSharding(mesh, s)) for a, s in zip(FUSED_ARGS, FUSED_SPECS, strict=True)]
        grads = jax.jit(jax.grad(_fused(), argnums=(0, 1)))(*args)
    assert grads[0].sharding.spec == P_HIDDEN
    assert grads[1].sharding.spec == P_HEAD
