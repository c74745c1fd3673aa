"""MinED: the loss against numpy, gradients, the host hook (the kernels: tests/losses/test_vocab_projection.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jdistill.data import alignment_mined
from tests.methods import cross_vocab_case as case
from tests import fake_models as views


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    return case.tokenizers(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def prepared(tokenizers, tmp_path_factory):
    s_tok, t_tok = tokenizers
    cache = tmp_path_factory.mktemp("vocab_maps")
    method = case.make("mined", temperature=2.0, vocab_map_dir=str(cache))
    batch = case.prepared_batch(method, s_tok, t_tok, tmp_path_factory.mktemp("work"))
    return method, batch, cache


def reference_kd(zs, zt, batch, s2t, tau, n):
    """Σ over response tokens of KL(projected teacher ‖ student) where aligned, else -log q(gold); / n."""
    total = 0.0
    for b, i in zip(*np.nonzero(batch["loss_mask"])):
        q = case.softmax(zs[b, i] / tau)
        if batch["mined_mask"][b, i]:
            j = batch["mined_teacher_index"][b, i]
            projected = np.array([zt[b, j, u] if u >= 0 else -np.inf for u in s2t])
            p = case.softmax(projected / tau)
            total += sum(pv * (np.log(pv) - np.log(qv)) for pv, qv in zip(p, q) if pv > 0)
        else:
            total += -np.log(q[batch["targets"][b, i]])
    return total / n


def test_host_hook_aligns_most_tokens_and_caches_the_map(prepared):
    _, batch, cache = prepared
    assert len(list(cache.glob("mined_vocab_map_*.npz"))) == 1
    aligned = batch["mined_mask"][batch["loss_mask"] > 0]
    # Every response token but the two-digit numbers ("15", "18": one student token, two teacher ones).
    assert aligned.sum() == aligned.size - 2
    assert np.all(batch["mined_mask"][batch["loss_mask"] == 0] == 0)


@pytest.mark.parametrize("padded_rows", [0, 3])
def test_loss_matches_numpy(prepared, tokenizers, padded_rows):
    method, batch, cache = prepared
    s_tok, t_tok = tokenizers
    if padded_rows:  # a student head with rows beyond the tokenizer: compared over the tokenizer's rows
        method = case.make("mined", temperature=2.0, vocab_map_dir=str(cache), vocab_size=len(s_tok))
        method.prepare_examples([], case.DataContext(None, "", s_tok, t_tok, "train"))
    student, teacher = case.random_models(3, batch, len(s_tok), len(t_tok), padded_rows)
    n = float(batch["loss_mask"].sum()) + 2.0
    total, metrics = case.jitted_loss(method)(batch, student, teacher, n)
    zs = np.asarray(student["hidden"] @ student["head"], np.float64)[..., : len(s_tok)]
    zt = np.asarray(teacher["hidden"] @ teacher["head"], np.float64)
    s2t = alignment_mined.cached_vocab_map(s_tok, t_tok, str(cache)).student_to_teacher
    want_kd = reference_kd(zs, zt, batch, s2t, 2.0, n)
    np.testing.assert_allclose(metrics["kd"], want_kd, rtol=2e-5)
    zs_full = np.asarray(student["hidden"] @ student["head"], np.float64)
    ce = sum(-np.log(case.softmax(zs_full[b, i])[batch["targets"][b, i]])
             for b, i in zip(*np.nonzero(batch["loss_mask"]))) / n
    np.testing.assert_allclose(metrics["ce"], ce, rtol=2e-5)
    np.testing.assert_allclose(total, 0.5 * ce + 0.5 * want_kd, rtol=2e-5)
    np.testing.assert_allclose(metrics["aligned"], batch["mined_mask"].sum() / n, rtol=1e-6)


def test_gradients_reach_the_student_only(prepared, tokenizers):
    method, batch, _ = prepared
    student, teacher = case.random_models(4, batch, len(tokenizers[0]), len(tokenizers[1]))

    def loss(s, t):
        return method.loss({}, batch, views.view(s), views.view(t), views.context(10.0))[0]

    g_student, g_teacher = jax.jit(jax.grad(loss, argnums=(0, 1)))(student, teacher)
    assert all(float(jnp.abs(g).sum()) == 0 for g in jax.tree.leaves(g_teacher))
    assert float(jnp.abs(g_student["hidden"]).sum()) > 0
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(g_student))


def test_kd_gradient_against_finite_differences(prepared, tokenizers):
    method, batch, _ = prepared
    student, teacher = case.random_models(5, batch, len(tokenizers[0]), len(tokenizers[1]))

    @jax.jit
    def kd(hidden):
        s = dict(student, hidden=hidden)
        return method.loss({}, batch, views.view(s), views.view(teacher), views.context(10.0))[1]["kd"]

    check_grads(kd, (student["hidden"],), order=1, modes=["rev"], atol=2e-2, rtol=2e-2, eps=1e-3)


def test_loss_before_the_host_hook_names_it(tokenizers):
    method = case.make("mined")
    batch = {"loss_mask": np.ones((1, 2), np.float32)}
    with pytest.raises(RuntimeError, match="prepare_examples"):
        method.loss({}, batch, None, None, views.context(1.0))


def test_bad_kd_rate_names_the_setting():
    with pytest.raises(ValueError, match="method.kd_rate"):
        case.make("mined", kd_rate=1.5)
