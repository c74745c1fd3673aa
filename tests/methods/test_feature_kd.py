"""Feature-based KD (+ attention transfer): the loss against numpy, layer maps, and where gradients go."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill.engine.defaults import base_config
from jdistill.methods import make_method
from jdistill.methods.layer_map import attention_pairs, layer_pairs
from tests.losses import numpy_reference as ref
from tests.methods import decoder_views as dv
from tests.methods import views


def method_config(**overrides):
    c = base_config("feature_kd").method
    c.attention_weight = 0.7
    c.feature_weight = 0.3
    for key, value in overrides.items():
        c[key] = value
    return c


def test_layer_maps():
    assert layer_pairs("uniform", 2, 4) == ((1, 2), (2, 4))
    assert layer_pairs("uniform", 3, 4) == ((1, 1), (2, 3), (3, 4))
    assert layer_pairs("last", 2, 5) == ((2, 5),)
    assert layer_pairs("0:0, 2:3", 2, 4) == ((0, 0), (2, 3))
    assert attention_pairs(((0, 0), (2, 3))) == ((1, 2),)
    with pytest.raises(ValueError, match="out of range"):
        layer_pairs("3:1", 2, 4)
    with pytest.raises(ValueError, match="method.layer_map"):
        layer_pairs("first", 2, 4)


@pytest.fixture(scope="module")
def case():
    student = dv.random_side(0, layers=2, width=3, heads=2)
    teacher = dv.random_side(1, layers=4, width=5, heads=4)
    return student, teacher, dv.batch_arrays()


def _loss_fn(method, batch, n):
    def loss(params, student, teacher):
        return method.loss(params, batch, dv.view(student), dv.view(teacher), views.context(n))

    return jax.jit(loss)


def _numpy_feature_loss(params, student, teacher, batch, n, heads):
    mask = batch["loss_mask"]
    zs, zt = student["logits"], teacher["logits"]
    ce = ref.token_mean(ref.cross_entropy(zs, batch["targets"]), mask, n)
    kd = ref.token_mean(ref.forward_kl(zs, zt), mask, n)
    feature = attention = 0.0
    for projector, (s, t) in zip(params["projectors"], [(1, 2), (2, 4)]):
        projected = student["all_hidden"][s].astype(np.float64) @ np.asarray(projector["kernel"]) + np.asarray(
            projector["bias"])
        mse = np.mean((projected - teacher["all_hidden"][t]) ** 2, axis=-1)
        feature += ref.token_mean(mse, mask, n) / 2
        a_s = student["attention"][s - 1].astype(np.float64)
        a_t = teacher["attention"][t - 1].astype(np.float64)
        if heads == "mean":
            a_s, a_t = a_s.mean(1, keepdims=True), a_t.mean(1, keepdims=True)
        else:  # 4 teacher heads -> 2 groups of 2
            a_t = np.stack([a_t[:, 0:2].mean(1), a_t[:, 2:4].mean(1)], axis=1)
        kl = np.where(a_t > 0, a_t * np.log(np.where(a_t > 0, a_t, 1) / np.where(a_t > 0, a_s, 1)), 0).sum(-1)
        attention += ref.token_mean(kl.mean(1), mask, n) / 2
    return ce, kd, feature, attention


@pytest.mark.parametrize("heads", ["mean", "mapped"])
def test_loss_matches_numpy(case, heads):
    student, teacher, batch = case
    method = make_method(method_config(attention_heads=heads, feature_distance="mse"))
    params = method.init_params(jax.random.key(0), dv.model_of(student), dv.model_of(teacher))
    assert [p["kernel"].shape for p in params["projectors"]] == [(3, 5), (3, 5)]
    n = float(batch["loss_mask"].sum()) + 2.0
    total, metrics = _loss_fn(method, batch, n)(params, student, teacher)
    ce, kd, feature, attention = _numpy_feature_loss(params, student, teacher, batch, n, heads)
    got = [metrics[k] for k in ("ce", "kd", "feature", "attention")]
    np.testing.assert_allclose(got, [ce, kd, feature, attention], rtol=1e-5)
    np.testing.assert_allclose(total, 0.5 * ce + 0.5 * kd + 0.3 * feature + 0.7 * attention, rtol=1e-5)
    assert method.student_call == {"output_hidden_states": True, "output_attentions": True}


def test_projectors_and_student_learn_the_teacher_does_not(case):
    student, teacher, batch = case
    method = make_method(method_config(feature_distance="cosine"))
    params = method.init_params(jax.random.key(1), dv.model_of(student), dv.model_of(teacher))
    n = float(batch["loss_mask"].sum())
    grads = jax.jit(jax.grad(lambda p, s, t: _loss_fn(method, batch, n)(p, s, t)[0], argnums=(0, 1, 2)))(
        params, student, teacher)
    g_params, g_student, g_teacher = grads
    for projector in g_params["projectors"]:
        assert float(jnp.abs(projector["kernel"]).sum()) > 0 and float(jnp.abs(projector["bias"]).sum()) > 0
    for key in ("all_hidden", "attention", "logits"):
        assert float(jnp.abs(g_student[key]).sum()) > 0, key
    # The feature and attention terms hold the teacher's states fixed; its logits (KD term) are
    # stop-gradient in the engine's step, which keeps a frozen teacher out of the trained state.
    for key in ("all_hidden", "attention"):
        assert float(jnp.abs(g_teacher[key]).sum()) == 0.0, key


def test_attention_off_needs_no_attention_maps_and_bad_settings_are_named(case):
    student, teacher, batch = case
    method = make_method(method_config(attention_weight=0.0))
    assert "output_attentions" not in method.student_call
    params = method.init_params(jax.random.key(2), dv.model_of(student), dv.model_of(teacher))
    _, metrics = _loss_fn(method, batch, 5.0)(params, student, teacher)
    assert "attention" not in metrics and np.isfinite(float(metrics["feature"]))
    with pytest.raises(ValueError, match="attention_heads"):
        make_method(method_config(attention_heads="first"))
    with pytest.raises(ValueError, match="maps no block outputs"):
        make_method(method_config(layer_map="0:0")).init_params(
            jax.random.key(0), dv.model_of(student), dv.model_of(teacher))


# ---- Named formulations: FitNets' hint loss and MiniLM's per-head attention KL. ----


def test_fitnets_feature_distance_is_half_the_squared_l2_of_the_projected_states(case):
    student, teacher, batch = case
    method = make_method(method_config(feature_distance="fitnets", attention_weight=0.0))
    params = method.init_params(jax.random.key(3), dv.model_of(student), dv.model_of(teacher))
    n = float(batch["loss_mask"].sum()) + 1.0
    total, metrics = _loss_fn(method, batch, n)(params, student, teacher)
    want = 0.0
    for projector, (s, t) in zip(params["projectors"], [(1, 2), (2, 4)]):
        projected = student["all_hidden"][s].astype(np.float64) @ np.asarray(projector["kernel"]) + np.asarray(
            projector["bias"])
        want += ref.token_mean(ref.fitnets_hint(projected, teacher["all_hidden"][t]), batch["loss_mask"], n) / 2
    np.testing.assert_allclose(metrics["feature"], want, rtol=1e-5)
    np.testing.assert_allclose(total, 0.5 * metrics["ce"] + 0.5 * metrics["kd"] + 0.3 * want, rtol=1e-5)
    _, mse_metrics = _loss_fn(make_method(method_config(feature_distance="mse", attention_weight=0.0)), batch, n)(
        params, student, teacher)
    np.testing.assert_allclose(metrics["feature"], 2.5 * mse_metrics["feature"], rtol=1e-5)  # D_t / 2 = 5 / 2


@pytest.fixture(scope="module")
def equal_heads_case():
    student = dv.random_side(4, layers=2, width=3, heads=4)
    teacher = dv.random_side(5, layers=4, width=5, heads=4)
    return student, teacher, dv.batch_arrays()


@pytest.mark.parametrize("layer_map", ["uniform", "0:0"])
def test_minilm_attention_uses_the_last_blocks_head_by_head(equal_heads_case, layer_map):
    student, teacher, batch = equal_heads_case
    method = make_method(method_config(attention_loss="minilm", layer_map=layer_map))
    params = method.init_params(jax.random.key(4), dv.model_of(student), dv.model_of(teacher))
    n = float(batch["loss_mask"].sum())
    total, metrics = _loss_fn(method, batch, n)(params, student, teacher)
    # Last blocks (student 1 of 0..1, teacher 3 of 0..3), whatever the layer map pairs for the feature term.
    want = ref.token_mean(ref.minilm_attention(student["attention"][1], teacher["attention"][3]),
                          batch["loss_mask"], n)
    np.testing.assert_allclose(metrics["attention"], want, rtol=1e-5)
    np.testing.assert_allclose(
        total, 0.5 * metrics["ce"] + 0.5 * metrics["kd"] + 0.3 * metrics["feature"] + 0.7 * want, rtol=1e-5)
    # Per head, not of the head averages: 'kl' with averaged heads on the same blocks gives another value.
    kl_method = make_method(method_config(attention_loss="kl", layer_map="2:4"))
    kl_params = kl_method.init_params(jax.random.key(4), dv.model_of(student), dv.model_of(teacher))
    _, kl_metrics = _loss_fn(kl_method, batch, n)(kl_params, student, teacher)
    assert abs(float(kl_metrics["attention"]) - want) > 1e-3
    g_student, g_teacher = jax.jit(jax.grad(lambda s, t: _loss_fn(method, batch, n)(params, s, t)[0],
                                            argnums=(0, 1)))(student, teacher)
    assert float(jnp.abs(g_student["attention"][1]).sum()) > 0 and float(jnp.abs(g_student["attention"][0]).sum()) == 0
    assert float(jnp.abs(g_teacher["attention"]).sum()) == 0.0


def test_minilm_with_unequal_heads_and_bad_names_are_rejected(case):
    student, teacher, batch = case  # 2 student heads, 4 teacher heads
    method = make_method(method_config(attention_loss="minilm"))
    params = method.init_params(jax.random.key(5), dv.model_of(student), dv.model_of(teacher))
    with pytest.raises(ValueError, match=r"attention_loss='minilm'.*equal head counts, got student 2 and teacher 4"):
        _loss_fn(method, batch, 5.0)(params, student, teacher)
    with pytest.raises(ValueError, match=r"method.attention_loss must be one of \('kl', 'minilm'\), got 'x'"):
        make_method(method_config(attention_loss="x"))
    with pytest.raises(ValueError, match=r"method.feature_distance must be one of \['cosine', 'fitnets', 'mse'\]"):
        make_method(method_config(feature_distance="l2"))
