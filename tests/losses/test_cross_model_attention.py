"""DSKD cross-model attention against numpy, with its masking and gradient-flow contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jdistill import losses
from jdistill.methods.projectors import init_cross_model_attention_params
from tests.losses import numpy_reference as ref

B, TS, TT, DS, DT = 2, 5, 7, 4, 6


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    student_mask = np.ones((B, TS), bool)
    student_mask[:, :2] = False  # prompt
    student_mask[1, -1] = False  # padding
    teacher_mask = np.ones((B, TT), bool)
    teacher_mask[:, :3] = False
    teacher_mask[0, -2:] = False
    return dict(
        student_input_embeds=f(B, TS, DS),
        student_target_embeds=f(B, TS, DS),
        student_hidden=f(B, TS, DS),
        student_mask=student_mask,
        teacher_input_embeds=f(B, TT, DT),
        teacher_target_embeds=f(B, TT, DT),
        teacher_hidden=f(B, TT, DT),
        teacher_mask=teacher_mask,
    )


PARAMS = init_cross_model_attention_params(jax.random.key(0), student_dim=DS, teacher_dim=DT)


@pytest.mark.parametrize("std_over", ["all", "response"])
def test_matches_numpy_under_jit(std_over):
    x = _inputs()
    out = jax.jit(losses.cross_model_attention, static_argnames="std_over")(PARAMS, **x, std_over=std_over)
    want = ref.cross_model_attention(
        PARAMS,
        x["student_input_embeds"], x["student_target_embeds"], x["student_hidden"], x["student_mask"],
        x["teacher_input_embeds"], x["teacher_target_embeds"], x["teacher_hidden"], x["teacher_mask"], std_over,
    )
    for got, expected in zip(out, want):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_weights_cover_only_response_pairs():
    x = _inputs(1)
    out = losses.cross_model_attention(PARAMS, **x)
    ms, mt = x["student_mask"], x["teacher_mask"]
    w = np.asarray(out.t2s_weights)
    assert np.all(w[~ms] == 0)  # non-response student rows attend nowhere
    assert np.all(np.swapaxes(w, 1, 2)[~mt] == 0)  # non-response teacher columns are never attended
    np.testing.assert_allclose(w[ms].sum(-1), 1.0, rtol=1e-6)
    w2 = np.asarray(out.s2t_weights)
    np.testing.assert_allclose(w2[mt].sum(-1), 1.0, rtol=1e-6)
    assert np.all(w2[~mt] == 0)


def test_padding_and_prompt_content_does_not_matter_with_response_stds():
    x = _inputs(2)
    base = losses.cross_model_attention(PARAMS, **x, std_over="response")
    y = {k: v.copy() for k, v in x.items()}
    for name in ("teacher_input_embeds", "teacher_target_embeds", "teacher_hidden"):
        y[name][~x["teacher_mask"]] = 1e3
    for name in ("student_input_embeds", "student_target_embeds", "student_hidden"):
        y[name][~x["student_mask"]] = -1e3
    changed = losses.cross_model_attention(PARAMS, **y, std_over="response")
    np.testing.assert_allclose(changed.t2s_hidden[x["student_mask"]], base.t2s_hidden[x["student_mask"]], rtol=1e-5)
    np.testing.assert_allclose(changed.s2t_hidden[x["teacher_mask"]], base.s2t_hidden[x["teacher_mask"]], rtol=1e-5)


def test_all_position_stds_see_the_padding():
    """DSKD's std over the whole tensor: teacher padding content scales K and V_t (never the weights' support)."""
    x = _inputs(2)
    y = {k: v.copy() for k, v in x.items()}
    y["teacher_hidden"][~x["teacher_mask"]] *= 3.0
    base = losses.cross_model_attention(PARAMS, **x, std_over="all")
    changed = losses.cross_model_attention(PARAMS, **y, std_over="all")
    ms = x["student_mask"]
    assert np.abs(np.asarray(changed.t2s_hidden - base.t2s_hidden)[ms]).max() > 1e-3
    want = ref.cross_model_attention(PARAMS, *[y[k] for k in (
        "student_input_embeds", "student_target_embeds", "student_hidden", "student_mask",
        "teacher_input_embeds", "teacher_target_embeds", "teacher_hidden", "teacher_mask")], "all")
    np.testing.assert_allclose(changed.t2s_hidden, want[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(changed.t2s_weights)[~ms], 0.0)


def test_unknown_std_over_is_named():
    with pytest.raises(ValueError, match="std_over must be one of"):
        losses.cross_model_attention(PARAMS, **_inputs(), std_over="batch")


def test_samples_attend_only_to_their_own_sequences():
    x = _inputs(3)
    base = losses.cross_model_attention(PARAMS, **x)
    y = {k: v.copy() for k, v in x.items()}
    y["teacher_hidden"][1] += 5.0  # change sample 1's teacher only
    changed = losses.cross_model_attention(PARAMS, **y)
    m0 = x["student_mask"][0]
    # Sample 0's outputs move only through the batch-wide std, which uses sample 1 too;
    # so compare against the numpy reference instead of expecting equality.
    want = ref.cross_model_attention(PARAMS, *[y[k] for k in (
        "student_input_embeds", "student_target_embeds", "student_hidden", "student_mask",
        "teacher_input_embeds", "teacher_target_embeds", "teacher_hidden", "teacher_mask")])
    np.testing.assert_allclose(changed.t2s_hidden[0][m0], want[0][0][m0], rtol=1e-4, atol=1e-5)
    # The attention weights of sample 0 do not depend on sample 1's hidden states at all.
    np.testing.assert_allclose(changed.t2s_weights[0], base.t2s_weights[0], rtol=1e-6)


def test_gradient_flow():
    """Teacher and index embeddings get no gradient; each projector only from its own path."""
    x = _inputs(4)
    ms, mt = x["student_mask"], x["teacher_mask"]

    def parts(params, student_hidden, teacher_hidden, teacher_input_embeds):
        out = losses.cross_model_attention(
            params,
            **{**x, "student_hidden": student_hidden, "teacher_hidden": teacher_hidden,
               "teacher_input_embeds": teacher_input_embeds},
        )
        t2s = jnp.sum(jnp.where(ms[..., None], out.t2s_hidden, 0.0) ** 2)
        s2t = jnp.sum(jnp.where(mt[..., None], out.s2t_hidden, 0.0) ** 2)
        return t2s, s2t

    args = (PARAMS, x["student_hidden"], x["teacher_hidden"], x["teacher_input_embeds"])
    g_t2s = jax.grad(lambda *a: parts(*a)[0], argnums=(0, 1, 2, 3))(*args)
    g_s2t = jax.grad(lambda *a: parts(*a)[1], argnums=(0, 1, 2, 3))(*args)
    norm = lambda tree: float(sum(jnp.abs(l).sum() for l in jax.tree_util.tree_leaves(tree)))  # noqa: E731
    for g in (g_t2s, g_s2t):
        assert norm(g[2]) == 0.0  # teacher hidden states: stop-gradient
        assert norm(g[3]) == 0.0  # teacher index embeddings: stop-gradient
    # t2s path: trains query and t2s projectors, not s2t, not the student hidden states.
    assert norm(g_t2s[0]["query"]) > 0 and norm(g_t2s[0]["t2s"]) > 0
    assert norm(g_t2s[0]["s2t"]) == 0.0 and norm(g_t2s[1]) == 0.0
    # s2t path: trains query, s2t and the student, not t2s.
    assert norm(g_s2t[0]["query"]) > 0 and norm(g_s2t[0]["s2t"]) > 0 and norm(g_s2t[1]) > 0
    assert norm(g_s2t[0]["t2s"]) == 0.0
    # Padding and prompt positions of the student get no gradient.
    assert float(jnp.abs(g_s2t[1][~ms]).sum()) == 0.0


def test_gradients_match_finite_differences():
    x = _inputs(5)
    ms = x["student_mask"]

    def loss(params):
        out = losses.cross_model_attention(params, **x)
        return jnp.sum(jnp.where(ms[..., None], out.t2s_hidden, 0.0) ** 2) + jnp.sum(out.s2t_hidden ** 2)

    check_grads(loss, (PARAMS,), order=1, modes=["rev"], atol=2e-2, rtol=2e-2, eps=1e-3)


def test_bad_shapes_are_named():
    x = _inputs()
    with pytest.raises(ValueError, match="teacher_mask has shape"):
        losses.cross_model_attention(PARAMS, **{**x, "teacher_mask": x["teacher_mask"][:, :-1]})
    wrong = init_cross_model_attention_params(jax.random.key(1), student_dim=DS, teacher_dim=DT + 1)
    with pytest.raises(ValueError, match="params\\['query'\\]\\['kernel'\\] has shape"):
        losses.cross_model_attention(wrong, **x)
