"""Fused-linear losses against the logits path: values, gradients, sharding, memory and errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jdistill import losses

B, T, D_S, D_T, V, V_PAD = 2, 7, 8, 12, 40, 48  # 14 tokens; the padded teacher head has 48 rows
ALPHA_B = np.array([0.2, 0.05], np.float32)

# name -> (divergence, kwargs); covers every registered divergence (see the test below).
CASES = {
    "forward_kl": ("forward_kl", {}),
    "reverse_kl": ("reverse_kl", {}),
    "js_divergence": ("js_divergence", {}),
    "generalized_jsd": ("generalized_jsd", {"beta": 0.3}),
    "skew_forward_kl": ("skew_forward_kl", {"alpha": ALPHA_B}),
    "skew_reverse_kl": ("skew_reverse_kl", {"alpha": ALPHA_B, "stop_gradient_mixture": True}),
    "skew_reverse_kl/scalar_alpha": ("skew_reverse_kl", {"alpha": 0.2}),
    "total_variation": ("total_variation", {}),
    "adaptive_kl": ("adaptive_kl", {"mu": 0.5}),
}


def _inputs(seed=0, teacher_vocab=V_PAD):
    rng = np.random.default_rng(seed)
    hs = rng.normal(size=(B, T, D_S)).astype(np.float32)
    ht = rng.normal(size=(B, T, D_T)).astype(np.float32)
    ws = (rng.normal(size=(D_S, V)) * 2 / np.sqrt(D_S)).astype(np.float32)
    wt = (rng.normal(size=(D_T, teacher_vocab)) * 2 / np.sqrt(D_T)).astype(np.float32)
    mask = np.ones((B, T), bool)
    mask[:, :2] = False  # prompt positions
    mask[1, 5:] = False  # right padding
    return hs, ws, ht, wt, mask


def _logits_path(hs, ws, ht, wt, mask, *, divergence, temperature=1.0, reduction="token", normalizer=None, **kw):
    kernel = losses.get_divergence(divergence)
    values = kernel(hs @ ws, (ht @ wt)[..., :V], temperature=temperature, **kw)
    return losses.get_reduction(reduction)(values, mask, normalizer=normalizer)


def _assert_close(got, want, atol=1e-5):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=atol)


def _value_and_grads(fns, argnums, *args):
    """``jax.value_and_grad`` of every function of ``fns`` in ONE compiled call (CPU compiles are slow)."""
    return jax.jit(lambda *a: {k: jax.value_and_grad(f, argnums=argnums)(*a) for k, f in fns.items()})(*args)


def _divergence_losses(path):
    """Mask, temperature, a chunk that does not divide N, a padded teacher vocabulary."""
    if path == "fused":
        fn = functools.partial(losses.fused_kd_loss, vocab_size=V, chunk_size=5)
    else:
        fn = _logits_path
    return {case: functools.partial(fn, divergence=div, temperature=1.7, **kw) for case, (div, kw) in CASES.items()}


@pytest.fixture(scope="module")
def logits_path_results():
    return _value_and_grads(_divergence_losses("plain"), (0, 1, 2, 3), *_inputs())


@pytest.fixture(scope="module")
def fused_results():
    return _value_and_grads(_divergence_losses("fused"), (0, 1, 2, 3), *_inputs())


def test_every_registered_divergence_is_covered():
    assert {divergence for divergence, _ in CASES.values()} == set(losses.DIVERGENCES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_logits_path_values_and_gradients(fused_results, logits_path_results, case):
    """Values and the gradients w.r.t. all four inputs (student and teacher hidden states and heads)."""
    _assert_close(fused_results[case], logits_path_results[case])


REDUCTION_OPTIONS = {
    "sequence": {"reduction": "sequence"},
    "token/normalizer": {"reduction": "token", "normalizer": 40.0},
    "sequence/normalizer/chunk4": {"reduction": "sequence", "normalizer": 3.0, "chunk_size": 4},
    "chunk_larger_than_tokens": {"chunk_size": 100},
    "chunk1": {"chunk_size": 1},
}


def test_reductions_and_chunkings():
    hs, ws, ht, wt, mask = _inputs(seed=1, teacher_vocab=V)
    weights = mask * np.linspace(0.5, 1.5, T, dtype=np.float32)  # a float mask weighs tokens
    fused, plain = {}, {}
    for key, options in REDUCTION_OPTIONS.items():
        reduction = {k: v for k, v in options.items() if k != "chunk_size"}
        fused[key] = functools.partial(losses.fused_kd_loss, divergence="js_divergence", **options)
        plain[key] = functools.partial(_logits_path, divergence="js_divergence", **reduction)
    got = _value_and_grads(fused, (0, 1), hs, ws, ht, wt, weights)
    want = _value_and_grads(plain, (0, 1), hs, ws, ht, wt, weights)
    for key in REDUCTION_OPTIONS:
        _assert_close(got[key], want[key])


def test_vd_head_layouts_and_default_chunk():
    hs, ws, ht, wt, mask = _inputs(seed=2)
    layouts = {"vd": ("vd", "vd"), "vd,dv": ("vd", "dv"), "dv,vd": ("dv", "vd")}

    def fused(hs, ws, layout):
        pair = layouts[layout]
        ws_in = ws.T if pair[0] == "vd" else ws
        wt_in = wt.T if pair[1] == "vd" else wt
        return losses.fused_kd_loss(hs, ws_in, ht, wt_in, mask, head_layout=pair, vocab_size=V)

    fns = {layout: functools.partial(fused, layout=layout) for layout in layouts}
    fns["plain"] = lambda hs, ws: _logits_path(hs, ws, ht, wt, mask, divergence="forward_kl")
    results = _value_and_grads(fns, (0, 1), hs, ws)
    for layout in layouts:
        _assert_close(results[layout], results["plain"])


def test_gradients_of_per_token_alpha_and_traced_scalars():
    """Array arguments get their exact gradients too (alpha per sequence, a traced temperature)."""
    hs, ws, ht, wt, mask = _inputs(seed=3)

    def loss(path, alpha, temperature):
        kw = dict(divergence="skew_forward_kl", alpha=alpha, temperature=temperature)
        if path == "fused":
            return losses.fused_kd_loss(hs, ws, ht, wt, mask, vocab_size=V, chunk_size=3, **kw)
        return _logits_path(hs, ws, ht, wt, mask, **kw)

    temperature = jnp.float32(1.3)
    got = jax.jit(jax.grad(functools.partial(loss, "fused"), argnums=(0, 1)))(ALPHA_B, temperature)
    want = jax.grad(functools.partial(loss, "plain"), argnums=(0, 1))(ALPHA_B, temperature)
    _assert_close(got, want)


def test_stop_gradient_teacher_costs_no_gradient_matmul():
    hs, ws, ht, wt, mask = _inputs(seed=4)

    def loss(hs, ws, ht, wt):
        return losses.fused_kd_loss(hs, ws, jax.lax.stop_gradient(ht), jax.lax.stop_gradient(wt), mask, vocab_size=V)

    grads = jax.grad(loss, argnums=(0, 1, 2, 3))(hs, ws, ht, wt)
    assert not np.any(grads[2]) and not np.any(grads[3])
    jaxpr = str(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(hs, ws, ht, wt))
    fused = functools.partial(losses.fused_kd_loss, mask=mask, vocab_size=V)
    both = str(jax.make_jaxpr(jax.grad(fused, argnums=(0, 1, 2, 3)))(hs, ws, ht, wt))
    # Two logits matmuls + the student's two gradient matmuls; the teacher adds two only when differentiated.
    assert jaxpr.count("dot_general") == 4
    assert both.count("dot_general") == 6


def test_dskd_projected_teacher_against_the_student_head():
    """z_t2s = P(h_t) W_s^T with a stop-gradient student head: gradients reach P, not the head."""
    hs, ws, ht, _, mask = _inputs(seed=5)
    proj = np.random.default_rng(6).normal(size=(D_T, D_S)).astype(np.float32) / np.sqrt(D_T)
    labels = np.random.default_rng(7).integers(0, V, size=(B, T))

    def loss(path, hs, ws, proj):
        z_t2s_hidden = ht @ proj
        ws_sg = jax.lax.stop_gradient(ws)
        if path == "fused":
            kd = losses.fused_kd_loss(hs, ws, jax.lax.stop_gradient(z_t2s_hidden), ws_sg, mask)
            ce = losses.fused_cross_entropy(z_t2s_hidden, ws_sg, labels, mask, chunk_size=4)
            return kd + ce
        kd = losses.token_mean(losses.forward_kl(hs @ ws, jax.lax.stop_gradient(z_t2s_hidden) @ ws_sg), mask)
        ce = losses.token_mean(losses.token_cross_entropy(z_t2s_hidden @ ws_sg, labels), mask)
        return kd + ce

    fns = {path: functools.partial(loss, path) for path in ("fused", "plain")}
    results = _value_and_grads(fns, (0, 1, 2), hs, ws, proj)
    _assert_close(results["fused"], results["plain"])


def test_cald_matches_logits_cald():
    hs_t, ws, ht_t, wt, mask_t = _inputs(seed=8)
    hs_s, _, ht_s, _, mask_s = _inputs(seed=9)
    hs_s, ht_s, mask_s = hs_s[:, :5], ht_s[:, :5], mask_s[:, :5]  # the halves need not share a shape
    alpha_s = np.array([0.1, 0.01], np.float32)
    kw = dict(alpha_t=ALPHA_B, alpha_s=alpha_s, beta=0.7, temperature=1.5)

    def fused(hs_t, hs_s, ws, reduction):
        return losses.fused_cald(
            hs_t, ht_t, mask_t, hs_s, ht_s, mask_s, ws, wt, vocab_size=V, chunk_size=4, reduction=reduction, **kw
        )

    def plain(hs_t, hs_s, ws, reduction):
        z = lambda h, w: (h @ w)[..., :V]  # noqa: E731
        return losses.cald(
            z(hs_t, ws), z(ht_t, wt), mask_t, z(hs_s, ws), z(ht_s, wt), mask_s, reduction=reduction, **kw
        )

    reductions = ("sequence", "token")
    fns = {(path.__name__, r): functools.partial(path, reduction=r) for path in (fused, plain) for r in reductions}
    results = _value_and_grads(fns, (0, 1, 2), hs_t, hs_s, ws)
    for reduction in ("sequence", "token"):
        _assert_close(results["fused", reduction], results["plain", reduction])


def test_cross_entropy_matches_direct_computation():
    hs, _, ht, wt, mask = _inputs(seed=10)
    labels = np.random.default_rng(11).integers(0, V, size=(B, T))
    labels[~mask] = -100  # ignored positions may hold anything

    def fused(h, w):
        return losses.fused_cross_entropy(
            h, w, labels, mask, head_layout="vd", vocab_size=V, chunk_size=6, temperature=2.0
        )

    def direct(h, w):
        log_p = jax.nn.log_softmax((h @ w.T)[..., :V] / 2.0)
        nll = -jnp.take_along_axis(log_p, np.maximum(labels, 0)[..., None], axis=-1)[..., 0]
        return jnp.sum(jnp.where(mask, nll, 0.0)) / mask.sum()

    results = _value_and_grads({"fused": fused, "direct": direct}, (0, 1), ht, wt.T)
    _assert_close(results["fused"], results["direct"])
    bad = labels.copy()
    bad[mask] = V  # a selected label outside the vocabulary is loud
    assert np.isnan(losses.fused_cross_entropy(ht, wt, bad, mask, vocab_size=V))


def test_empty_mask_gives_zero_with_zero_gradients():
    hs, ws, ht, wt, _ = _inputs(seed=12, teacher_vocab=V)
    empty = np.zeros((B, T), bool)
    value, grads = jax.value_and_grad(losses.fused_kd_loss, argnums=(0, 1))(hs, ws, ht, wt, empty, chunk_size=4)
    assert float(value) == 0.0 and not any(np.any(g) for g in grads)


def test_bf16_inputs_keep_their_dtype_and_compute_in_float32():
    hs, ws, ht, wt, mask = _inputs(seed=13)
    args16 = [jnp.asarray(x, jnp.bfloat16) for x in (hs, ws, ht, wt)]
    value, grads = jax.value_and_grad(losses.fused_kd_loss, argnums=(0, 1))(*args16, mask, vocab_size=V, chunk_size=4)
    assert value.dtype == jnp.float32 and all(g.dtype == jnp.bfloat16 for g in grads)
    want_value, want_grads = jax.value_and_grad(_logits_path, argnums=(0, 1))(
        *[np.asarray(x, np.float32) for x in args16], mask, divergence="forward_kl"
    )
    np.testing.assert_allclose(value, want_value, rtol=2e-2)
    for g, w in zip(grads, want_grads):
        np.testing.assert_allclose(np.asarray(g, np.float32), w, rtol=5e-2, atol=5e-3)


def test_fused_temporary_memory_is_bounded_by_the_chunk():
    """The compiled value-and-grad keeps O(chunk x V), not O(tokens x V): no chunk is hoisted."""
    tokens, d, vocab, chunk = 1024, 32, 2048, 64
    hs = jax.ShapeDtypeStruct((tokens, d), jnp.float32)
    ws = jax.ShapeDtypeStruct((d, vocab), jnp.float32)
    mask = jax.ShapeDtypeStruct((tokens,), jnp.bool_)

    def temp_bytes(fn):
        compiled = jax.jit(jax.value_and_grad(fn, argnums=(0, 1))).lower(hs, ws, hs, ws, mask).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    fused = temp_bytes(functools.partial(losses.fused_kd_loss, chunk_size=chunk))
    plain = temp_bytes(lambda a, b, c, d, m: losses.token_mean(losses.forward_kl(a @ b, c @ d), m))
    one_logits_buffer = tokens * vocab * 4
    assert plain > 4 * one_logits_buffer  # the logits path holds several [tokens, V] buffers
    assert fused < plain / 4
    assert fused < one_logits_buffer


# ----------------------------------------------------------------------------- sharding


@pytest.fixture(scope="module")
def mesh():
    assert jax.device_count() == 8, "tests/conftest.py should provide 8 CPU devices"
    return jax.make_mesh((2, 4), ("data", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


@pytest.fixture(scope="module")
def sharded_results(mesh):
    """Tokens over 'data', both heads over the vocabulary on 'tensor' (the padded one too)."""
    hs, ws, ht, wt, mask = _inputs()
    put = lambda x, *spec: jax.device_put(x, NamedSharding(mesh, P(*spec)))  # noqa: E731
    sharded = (put(hs, "data"), put(ws, None, "tensor"), put(ht, "data"), put(wt, None, "tensor"), put(mask, "data"))
    return _value_and_grads(_divergence_losses("fused"), (0, 1, 2, 3), *sharded)


@pytest.mark.parametrize("case", sorted(CASES))
def test_sharded_over_data_and_vocabulary_equals_logits_path(sharded_results, logits_path_results, case):
    _assert_close(sharded_results[case], logits_path_results[case])
    head_grad = sharded_results[case][1][1]
    assert head_grad.sharding.spec == P(None, "tensor")  # the head gradient stays vocabulary-sharded


def test_cald_and_cross_entropy_sharded(mesh):
    hs, ws, ht, wt, mask = _inputs(seed=15)
    labels = np.random.default_rng(16).integers(0, V, size=(B, T))
    put = lambda x, *spec: jax.device_put(x, NamedSharding(mesh, P(*spec)))  # noqa: E731

    def loss(hs, ws, ht, wt, mask, labels):
        cald = losses.fused_cald(
            hs, ht, mask, hs[:, ::-1], ht, mask, ws, wt, alpha_t=ALPHA_B, vocab_size=V, chunk_size=4
        )
        return cald + losses.fused_cross_entropy(hs, ws, labels, mask, chunk_size=4)

    f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    sharded = (put(hs, "data"), put(ws, None, "tensor"), put(ht, "data"), put(wt, None, "tensor"), put(mask, "data"),
               put(labels, "data"))
    _assert_close(f(*sharded), f(hs, ws, ht, wt, mask, labels))


# ----------------------------------------------------------------------------- chunk size and errors


def test_chunk_size_from_memory_budget():
    assert losses.fused_chunk_size(8192, 32768) == 256
    assert losses.fused_chunk_size(8192, 151936) == 56
    assert losses.fused_chunk_size(5, 151936) == 5
    assert losses.fused_chunk_size(8192, 10**7) == 1  # the budget cannot hold one row: one token per chunk
    for tokens in (1, 7, 100, 1000, 8191):
        chunk = losses.fused_chunk_size(tokens, 32768, memory_budget_bytes=2**26)
        num_chunks = -(-tokens // chunk)
        assert 1 <= chunk <= tokens and num_chunks * chunk - tokens < 8 * num_chunks


def test_clear_errors():
    hs, ws, ht, wt, mask = _inputs(seed=17)
    with pytest.raises(ValueError, match=r"different vocabulary sizes \[40, 48\].*vocab_size"):
        losses.fused_kd_loss(hs, ws, ht, wt, mask)
    with pytest.raises(ValueError, match="vocab_size=64 must be an integer in"):
        losses.fused_kd_loss(hs, ws, ht, wt, mask, vocab_size=64)
    with pytest.raises(ValueError, match="student_hidden has 8 features.*stored as 'vd'"):
        losses.fused_kd_loss(hs, ws.T, ht, wt, mask, vocab_size=V)
    with pytest.raises(ValueError, match="teacher_hidden has 8 features"):
        losses.fused_kd_loss(hs, ws, hs, wt, mask, vocab_size=V)
    with pytest.raises(ValueError, match="head_layout must be"):
        losses.fused_kd_loss(hs, ws, ht, wt, mask, vocab_size=V, head_layout="auto")
    with pytest.raises(ValueError, match="mask .* token shape"):
        losses.fused_kd_loss(hs, ws, ht, wt, mask[:, :3], vocab_size=V)
    with pytest.raises(ValueError, match="same leading"):
        losses.fused_kd_loss(hs, ws, ht[:, :3], wt, mask, vocab_size=V)
    with pytest.raises(ValueError, match="alpha of shape .* leading token axes"):
        losses.fused_kd_loss(hs, ws, ht, wt, mask, vocab_size=V, divergence="skew_forward_kl", alpha=np.ones(3))
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        losses.fused_kd_loss(hs, ws, ht, wt, mask, vocab_size=V, chunk_size=0)
    with pytest.raises(ValueError, match="Unknown divergence"):
        losses.fused_kd_loss(hs, ws, ht, wt, mask, vocab_size=V, divergence="kl")
    with pytest.raises(ValueError, match="alpha must lie in"):
        losses.fused_kd_loss(hs, ws, ht, wt, mask, vocab_size=V, divergence="skew_forward_kl", alpha=1.5)
    with pytest.raises(ValueError, match="labels must be integers"):
        losses.fused_cross_entropy(hs, ws, hs[..., 0], mask)
    with pytest.raises(TypeError, match="must be a floating-point"):
        losses.fused_cross_entropy(hs.astype(np.int32), ws, mask.astype(np.int32), mask)
