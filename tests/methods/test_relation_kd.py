"""Relation-based KD: the loss against numpy (no projector, different widths) and where gradients go."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill.engine.defaults import base_config
from jdistill.methods import make_method
from jdistill.methods.base import StepContext
from tests.losses import numpy_reference as ref
from tests.methods import decoder_views as dv


def method_config(**overrides):
    c = base_config("relation_kd").method
    c.layer_map = "last"
    c.token_relation_weight = 0.4
    c.sample_relation_weight = 0.6
    for key, value in overrides.items():
        c[key] = value
    return c


def context(num_tokens, num_sequences):
    one = jnp.ones((), jnp.float32)
    return StepContext(progress=one, num_tokens=jnp.float32(num_tokens), num_sequences=jnp.float32(num_sequences),
                       teacher_num_tokens=jnp.float32(num_tokens), rng=jax.random.key_data(jax.random.key(0)))


def _cos_matrix(x):
    x = np.asarray(x, np.float64)
    unit = x / np.linalg.norm(x, axis=-1, keepdims=True)
    return unit @ np.swapaxes(unit, -1, -2)


def _numpy_relations(h_s, h_t, mask, n_tokens, n_sequences):
    token_sum = 0.0
    for b in range(mask.shape[0]):
        sel = np.flatnonzero(mask[b])
        if not len(sel):
            continue
        diff = (_cos_matrix(h_s[b]) - _cos_matrix(h_t[b]))[np.ix_(sel, sel)]
        token_sum += np.sum(np.mean(diff ** 2, axis=1))
    valid = np.flatnonzero(mask.any(-1))
    pooled_s = np.stack([h_s[b][mask[b] > 0].mean(0) for b in valid])
    pooled_t = np.stack([h_t[b][mask[b] > 0].mean(0) for b in valid])
    sample = np.mean((_cos_matrix(pooled_s) - _cos_matrix(pooled_t)) ** 2, axis=1).sum()
    return token_sum / n_tokens, sample / n_sequences


@pytest.fixture(scope="module")
def case():
    student = dv.random_side(2, layers=2, width=3, heads=2, batch=3)
    teacher = dv.random_side(3, layers=4, width=8, heads=2, batch=3)
    batch = dv.batch_arrays(batch=3)
    batch["loss_mask"][1] = 0.0  # a row without response tokens takes no part
    return student, teacher, batch


def _loss_fn(method, batch, ctx):
    return jax.jit(lambda s, t: method.loss({}, batch, dv.view(s), dv.view(t), ctx))


@pytest.mark.parametrize("layer_map,pairs", [("last", [(2, 4)]), ("uniform", [(1, 2), (2, 4)])])
def test_loss_matches_numpy(case, layer_map, pairs):
    student, teacher, batch = case
    method = make_method(method_config(layer_map=layer_map))
    assert method.init_params(jax.random.key(0), dv.model_of(student), dv.model_of(teacher)) == {}
    n_tokens, n_sequences = float(batch["loss_mask"].sum()) + 3.0, 4.0  # "global" counts
    total, metrics = _loss_fn(method, batch, context(n_tokens, n_sequences))(student, teacher)
    terms = [_numpy_relations(student["all_hidden"][s], teacher["all_hidden"][t], batch["loss_mask"], n_tokens,
                              n_sequences) for s, t in pairs]
    token, sample = np.mean([a for a, _ in terms]), np.mean([b for _, b in terms])
    np.testing.assert_allclose([metrics["token_relation"], metrics["sample_relation"]], [token, sample], rtol=1e-5)
    ce = ref.token_mean(ref.cross_entropy(student["logits"], batch["targets"]), batch["loss_mask"], n_tokens)
    kd = ref.token_mean(ref.forward_kl(student["logits"], teacher["logits"]), batch["loss_mask"], n_tokens)
    np.testing.assert_allclose(total, 0.5 * ce + 0.5 * kd + 0.4 * token + 0.6 * sample, rtol=1e-5)


def test_student_states_learn_teacher_states_do_not(case):
    student, teacher, batch = case
    method = make_method(method_config(kd_rate=0.0))
    loss = _loss_fn(method, batch, context(10.0, 2.0))
    g_student, g_teacher = jax.jit(jax.grad(lambda s, t: loss(s, t)[0], argnums=(0, 1)))(student, teacher)
    assert float(jnp.abs(g_student["all_hidden"][2]).sum()) > 0
    assert float(jnp.abs(g_teacher["all_hidden"]).sum()) == 0.0
    with pytest.raises(ValueError, match="must be >= 0"):
        make_method(method_config(sample_relation_weight=-1.0))


# ---- Named formulations: RKD (Park et al., 2019) and similarity-preserving KD (Tung & Mori, 2019). ----

NAMED = {"rkd_distance": ref.rkd_distance, "rkd_angle": ref.rkd_angle, "sp": ref.similarity_preserving}


def _numpy_named_terms(h_s, h_t, mask, n_tokens, n_sequences, component):
    """(token term, sample term) of one layer pair from the float64 references."""
    reference = NAMED[component]
    token = float(np.sum(reference(h_s, h_t, mask) * mask)) / n_tokens
    valid = mask.any(-1)
    pooled = [np.stack([h[b][mask[b] > 0].astype(np.float64).mean(0) if valid[b] else np.zeros(h.shape[-1])
                        for b in range(mask.shape[0])])[None] for h in (h_s, h_t)]
    sample = float(np.sum(reference(pooled[0], pooled[1], valid[None]))) / n_sequences
    return token, sample


@pytest.fixture(scope="module")
def case4():
    """Four sequences, one without response tokens: three sample points (two give RKD nothing to match)."""
    student = dv.random_side(7, layers=2, width=3, heads=2, batch=4)
    teacher = dv.random_side(8, layers=4, width=8, heads=2, batch=4)
    batch = dv.batch_arrays(batch=4)
    batch["loss_mask"][1] = 0.0
    return student, teacher, batch


@pytest.mark.parametrize("relation_loss,weights", [("rkd", {"rkd_distance": 0.7, "rkd_angle": 1.3}),
                                                   ("sp", {"sp": 1.0})])
def test_named_relation_losses_match_numpy(case4, relation_loss, weights):
    student, teacher, batch = case4
    method = make_method(method_config(layer_map="uniform", relation_loss=relation_loss, rkd_distance_weight=0.7,
                                       rkd_angle_weight=1.3))
    n_tokens, n_sequences = float(batch["loss_mask"].sum()) + 3.0, 4.0
    total, metrics = _loss_fn(method, batch, context(n_tokens, n_sequences))(student, teacher)
    pairs = [(1, 2), (2, 4)]
    parts = {}
    for component in weights:
        per_pair = [_numpy_named_terms(student["all_hidden"][s], teacher["all_hidden"][t], batch["loss_mask"],
                                       n_tokens, n_sequences, component) for s, t in pairs]
        parts[component] = (np.mean([a for a, _ in per_pair]), np.mean([b for _, b in per_pair]))
        assert min(parts[component]) > 1e-4  # both levels contribute real values
    token = sum(w * parts[c][0] for c, w in weights.items())
    sample = sum(w * parts[c][1] for c, w in weights.items())
    np.testing.assert_allclose([metrics["token_relation"], metrics["sample_relation"]], [token, sample], rtol=2e-5)
    if relation_loss == "rkd":  # each component is logged unweighted
        for c in weights:
            np.testing.assert_allclose([metrics[f"token_{c}"], metrics[f"sample_{c}"]], parts[c], rtol=2e-5)
    ce = ref.token_mean(ref.cross_entropy(student["logits"], batch["targets"]), batch["loss_mask"], n_tokens)
    kd = ref.token_mean(ref.forward_kl(student["logits"], teacher["logits"]), batch["loss_mask"], n_tokens)
    np.testing.assert_allclose(total, 0.5 * ce + 0.5 * kd + 0.4 * token + 0.6 * sample, rtol=2e-5)


def test_each_formulation_changes_only_the_relation_terms(case):
    student, teacher, batch = case
    ctx = context(float(batch["loss_mask"].sum()), 2.0)
    results = {}
    for relation_loss in ("cosine_mse", "rkd", "sp"):
        results[relation_loss] = _loss_fn(make_method(method_config(relation_loss=relation_loss)), batch, ctx)(
            student, teacher)
    base_total, base_metrics = results["cosine_mse"]
    assert "token_rkd_distance" not in base_metrics
    for name in ("rkd", "sp"):
        total, metrics = results[name]
        np.testing.assert_allclose([metrics["ce"], metrics["kd"]], [base_metrics["ce"], base_metrics["kd"]])
        assert abs(float(metrics["token_relation"]) - float(base_metrics["token_relation"])) > 1e-3, name
        assert abs(float(total) - float(base_total)) > 1e-3, name
    # RKD with the angle weight at 0 is the distance term alone, and the angle is not computed.
    _, distance_only = _loss_fn(make_method(method_config(relation_loss="rkd", rkd_angle_weight=0.0)), batch, ctx)(
        student, teacher)
    assert "token_rkd_angle" not in distance_only
    np.testing.assert_allclose(distance_only["token_relation"], results["rkd"][1]["token_rkd_distance"], rtol=1e-6)


@pytest.mark.parametrize("relation_loss", ["rkd", "sp"])
def test_named_formulations_train_the_student_states_only(case, relation_loss):
    student, teacher, batch = case
    loss = _loss_fn(make_method(method_config(kd_rate=0.0, relation_loss=relation_loss)), batch, context(10.0, 2.0))
    g_student, g_teacher = jax.jit(jax.grad(lambda s, t: loss(s, t)[0], argnums=(0, 1)))(student, teacher)
    assert np.isfinite(np.asarray(g_student["all_hidden"])).all()
    assert float(jnp.abs(g_student["all_hidden"][2]).sum()) > 0
    assert float(jnp.abs(g_teacher["all_hidden"]).sum()) == 0.0


def test_bad_relation_settings_are_named():
    with pytest.raises(ValueError, match=r"method.relation_loss must be one of \('cosine_mse', 'rkd', 'sp'\), got 'x'"):
        make_method(method_config(relation_loss="x"))
    with pytest.raises(ValueError, match="method.rkd_distance_weight and method.rkd_angle_weight must be >= 0"):
        make_method(method_config(relation_loss="rkd", rkd_angle_weight=-1.0))
    with pytest.raises(ValueError, match="not both 0"):
        make_method(method_config(relation_loss="rkd", rkd_distance_weight=0.0, rkd_angle_weight=0.0))
    assert make_method(method_config(relation_loss="sp", rkd_angle_weight=-1.0)).name == "relation_kd"  # not read
