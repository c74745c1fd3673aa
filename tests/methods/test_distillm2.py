"""DistiLLM-2: the per-row CALD kernel, the α curriculum and β schedule, the method's loss.

References are float64 numpy written from the paper's formulas, row by row.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jdistill import losses
from jdistill.engine.defaults import base_config
from jdistill.methods import data_policy as dp
from jdistill.methods import distillm2
from jdistill.methods import make_method
from tests.losses import numpy_reference as ref
from tests.methods import views

V, T, D = 7, 5, 6


# ----------------------------------------------------------------------------- numpy reference


def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_row_values(zs, zt, student_row, alpha):
    """[T] CALD values of one row: SKL on a teacher row, SRKL (mixture value unchanged) on a student row."""
    q, p = np.exp(np_log_softmax(zs)), np.exp(np_log_softmax(zt))
    if student_row:
        mix = (1 - alpha) * p + alpha * q
        return (q * (np.log(q) - np.log(mix))).sum(-1)
    mix = alpha * p + (1 - alpha) * q
    return (p * (np.log(p) - np.log(mix))).sum(-1)


def np_alpha(zs, zt, targets, mask, student_row, reference, on, alpha0, alpha_min):
    """Eq. 7 for one row, gap oriented p̄ - q̄ on teacher rows and q̄ - p̄ on student rows."""
    lq = np.take_along_axis(np_log_softmax(zs), targets[:, None], -1)[:, 0]
    lp = np.take_along_axis(np_log_softmax(zt), targets[:, None], -1)[:, 0]
    m = mask.astype(bool)
    p_bar, q_bar = np.exp(lp[m].mean()), np.exp(lq[m].mean())
    gap = q_bar - p_bar if student_row else p_bar - q_bar
    if not on or reference <= 0:
        return alpha0, gap
    # The release: clip(1 - (1 - a0) m / (gap + 1e-5), a_min, a0).
    alpha = 1 - (1 - alpha0) * reference / (gap + 1e-5)
    return min(max(alpha, alpha_min), alpha0), gap


def np_release_beta(progress, start=1.0, cap=1.5, ramp=0.5):
    """distillm_trainer.py: beta = 1.0 + 0.5 * min(1., 2 * global_step / max_steps)."""
    return start + (cap - start) * min(1.0, progress / ramp)


def np_loss(batch, zs, zt, progress, cfg, reduction="sequence", beta_cap=1.5):
    flags = batch[dp.STUDENT_ROW]
    beta = np_release_beta(progress, cap=beta_cap)
    halves = {0: [], 1: []}
    alphas, gaps = [], []
    for b in range(zs.shape[0]):
        s_row = bool(flags[b] > 0.5)
        alpha, gap = np_alpha(zs[b], zt[b], batch["targets"][b], batch["loss_mask"][b], s_row,
                              batch[dp.REFERENCE_GAP][b], batch[dp.CURRICULUM_ON][b] > 0.5,
                              cfg["alpha0"], cfg["alpha_min"])
        alphas.append(alpha)
        gaps.append(gap)
        values = np_row_values(zs[b], zt[b], s_row, alpha)
        halves[int(s_row)].append((values, batch["loss_mask"][b]))
    reduce = ref.sequence_mean if reduction == "sequence" else ref.token_mean
    parts = []
    for h in (0, 1):
        values = np.stack([v for v, _ in halves[h]])
        masks = np.stack([m for _, m in halves[h]])
        parts.append(reduce(values, masks))
    return (2 - beta) * parts[0] + beta * parts[1], np.array(alphas), np.array(gaps), parts


# ----------------------------------------------------------------------------- fixtures


def method_config(**overrides):
    c = base_config("distillm2").method
    c.vocab_size = V
    c.fused = "off"
    for key, value in overrides.items():
        c[key] = value
    return c


def make_case(seed, prompts=3):
    """Views of 2·prompts rows (teacher responses, then student responses) and the batch arrays."""
    rng = np.random.default_rng(seed)
    rows = 2 * prompts

    def side(scale):
        return {"hidden": jnp.asarray(scale * rng.normal(size=(rows, T, D)), jnp.float32),
                "head": jnp.asarray(rng.normal(size=(D, V)), jnp.float32),
                "embed": jnp.asarray(rng.normal(size=(V, D)), jnp.float32)}

    student, teacher = side(1.0), side(2.0)  # a sharper teacher, so the gaps spread out
    targets = rng.integers(0, V, size=(rows, T)).astype(np.int32)
    mask = np.zeros((rows, T), np.float32)
    lengths = [5, 3, 4, 2, 5, 1][:rows]
    for r, n in enumerate(lengths):
        mask[r, T - n :] = 1.0
    flags = np.repeat([0.0, 1.0], prompts).astype(np.float32)
    tokens = mask.sum(-1)
    batch = {
        "input_ids": np.zeros((rows, T), np.int32),
        "attention_mask": np.ones((rows, T), bool),
        "targets": targets,
        "loss_mask": mask,
        dp.STUDENT_ROW: flags,
        dp.HALF_SEQUENCES: np.repeat([prompts, prompts], prompts).astype(np.float32),
        dp.HALF_TOKENS: np.repeat([tokens[:prompts].sum(), tokens[prompts:].sum()], prompts).astype(np.float32),
        dp.CURRICULUM_ON: np.zeros(rows, np.float32),
        dp.REFERENCE_GAP: np.zeros(rows, np.float32),
    }
    return student, teacher, batch


def logits(side):
    return np.asarray(side["hidden"], np.float64) @ np.asarray(side["head"], np.float64)


def run_loss(config, batch, student, teacher, progress=0.5, *, held_out=False):
    """The method's loss (``eval_loss`` on held-out batches) and metrics, jitted."""
    method = make_method(config)
    loss_fn = method.eval_loss if held_out else method.loss

    def fn(batch, student, teacher, progress):
        base = views.context(1.0)
        ctx = base.__class__(progress=progress, num_tokens=base.num_tokens, num_sequences=base.num_sequences,
                             teacher_num_tokens=base.teacher_num_tokens, rng=base.rng)
        return loss_fn({}, batch, views.view(student), views.view(teacher), ctx)

    jbatch = {k: jnp.asarray(v) for k, v in batch.items()}
    return jax.jit(fn)(jbatch, student, teacher, jnp.float32(progress))


CFG = {"alpha0": 0.1, "alpha_min": 0.01}


# ----------------------------------------------------------------------------- kernel


def test_cald_token_divergence_matches_numpy_per_row():
    s, t = np.random.default_rng(0).normal(size=(2, 4, T, V)) * 2
    flags = np.array([0.0, 1.0, 1.0, 0.0], np.float32)
    alpha = np.array([0.1, 0.3, 0.0, 0.05], np.float32)
    kernel = jax.jit(lambda s, t: losses.cald_token_divergence(s, t, on_student_response=flags, alpha=alpha))
    got = kernel(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32))
    for b in range(4):
        want = np_row_values(s[b], t[b], flags[b] > 0.5, alpha[b])
        np.testing.assert_allclose(np.asarray(got[b]), want, rtol=2e-5, atol=1e-6)


def test_srkl_mixture_carries_no_gradient_into_the_student_term():
    """d/dz KL(q(z) || (1-α)p + α·q(z0)) at z = z0: the mixture's q is a constant."""
    rng = np.random.default_rng(1)
    z0, zt = rng.normal(size=(2, V))
    alpha = 0.3
    q0 = np.exp(np_log_softmax(z0))

    def frozen_mixture(z):
        q, p = np.exp(np_log_softmax(z)), np.exp(np_log_softmax(zt))
        return float((q * (np.log(q) - np.log((1 - alpha) * p + alpha * q0))).sum())

    def live_mixture(z):
        q, p = np.exp(np_log_softmax(z)), np.exp(np_log_softmax(zt))
        return float((q * (np.log(q) - np.log((1 - alpha) * p + alpha * q))).sum())

    kernel = lambda z: losses.cald_token_divergence(  # noqa: E731
        z, jnp.asarray(zt, jnp.float32), on_student_response=1.0, alpha=alpha)
    grad = np.asarray(jax.jit(jax.grad(kernel))(jnp.asarray(z0, jnp.float32)))
    np.testing.assert_allclose(grad, ref.numeric_grad(frozen_mixture, z0), atol=1e-5)
    assert np.abs(grad - ref.numeric_grad(live_mixture, z0)).max() > 1e-3  # the two really differ


def test_skl_rows_keep_the_student_gradient_through_the_mixture():
    rng = np.random.default_rng(2)
    z0, zt = rng.normal(size=(2, V))
    alpha = 0.3

    def skl(z):
        q, p = np.exp(np_log_softmax(z)), np.exp(np_log_softmax(zt))
        return float((p * (np.log(p) - np.log(alpha * p + (1 - alpha) * q))).sum())

    kernel = lambda z: losses.cald_token_divergence(  # noqa: E731
        z, jnp.asarray(zt, jnp.float32), on_student_response=0.0, alpha=alpha)
    grad = np.asarray(jax.jit(jax.grad(kernel))(jnp.asarray(z0, jnp.float32)))
    np.testing.assert_allclose(grad, ref.numeric_grad(skl, z0), atol=1e-5)


def test_token_logprobs_plain_and_fused_agree_with_numpy():
    rng = np.random.default_rng(3)
    h, w = rng.normal(size=(2, 3, 4)), rng.normal(size=(4, 9))
    y = rng.integers(0, 9, size=(2, 3))
    want = np.take_along_axis(np_log_softmax(h @ w / 0.7), y[..., None], -1)[..., 0]
    plain = jax.jit(lambda z, y: losses.token_logprobs(z, y, temperature=0.7))(jnp.asarray(h @ w), jnp.asarray(y))
    fused = jax.jit(lambda h, w, y: losses.fused_token_logprobs(h, w, y, temperature=0.7, chunk_size=4))(
        jnp.asarray(h, jnp.float32), jnp.asarray(w, jnp.float32), jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(plain), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(fused), want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- schedules


def test_release_beta_transcribes_gradual_beta():
    """β = 1 + 0.5·min(1, 2·step/max_steps) (the release), over a whole scripted run."""
    max_steps = 37
    for step in range(max_steps + 1):
        want = 1.0 + 0.5 * min(1.0, 2 * step / max_steps)
        np.testing.assert_allclose(float(distillm2.release_beta(step / max_steps)), want, rtol=1e-6)
    # Other start / cap / ramp, and progress past 1 clipped.
    got = [float(distillm2.release_beta(p, start=0.8, cap=1.2, ramp=0.25)) for p in (0.0, 0.125, 0.25, 0.9, 1.7)]
    np.testing.assert_allclose(got, [0.8, 1.0, 1.2, 1.2, 1.2], rtol=1e-6)
    # cap == start: the release's default (gradual_beta = False), β = 1 throughout.
    np.testing.assert_allclose([float(distillm2.release_beta(p, cap=1.0)) for p in (0, 0.3, 1)], 1.0)
    w_skl, w_srkl = distillm2.release_weights(1.5)
    assert (float(w_skl), float(w_srkl)) == (0.5, 1.5)


def test_bad_beta_and_alpha_settings_name_the_setting():
    with pytest.raises(ValueError, match="method.beta_cap must lie in \\[0, 2\\]"):
        make_method(method_config(beta_cap=2.5))
    with pytest.raises(ValueError, match="method.beta_ramp must lie in \\(0, 1\\]"):
        make_method(method_config(beta_ramp=0.0))
    with pytest.raises(ValueError, match="method.alpha_min"):
        make_method(method_config(alpha_min=0.2))


# ----------------------------------------------------------------------------- the method's loss


def test_first_epoch_uses_alpha0_and_matches_numpy():
    student, teacher, batch = make_case(0)
    loss, metrics = run_loss(method_config(), batch, student, teacher, progress=0.25)
    want, alphas, gaps, (skl, srkl) = np_loss(batch, logits(student), logits(teacher), 0.25, CFG)
    np.testing.assert_allclose(alphas, 0.1)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    np.testing.assert_allclose([float(metrics["skl"]), float(metrics["srkl"])], [skl, srkl], rtol=1e-5)
    np.testing.assert_allclose(float(metrics["beta"]), 1.25, rtol=1e-6)  # half-way up the ramp
    np.testing.assert_allclose(float(metrics[dp.GAP_METRICS[0]]), gaps[:3].mean(), rtol=1e-4)
    np.testing.assert_allclose(float(metrics[dp.GAP_METRICS[1]]), gaps[3:].mean(), rtol=1e-4)


def test_curriculum_alpha_hits_both_clip_bounds_and_matches_numpy():
    student, teacher, batch = make_case(0)
    _, _, gaps, _ = np_loss(batch, logits(student), logits(teacher), 0.0, CFG)
    # Reference gaps between the largest and second largest gap of each half: the largest
    # gap is clipped at alpha0, the smaller positive ones at alpha_min, and a gap <= 0 (the
    # student ahead) at alpha0 as in the release.
    for half in (slice(0, 3), slice(3, 6)):
        top = np.sort(gaps[half])
        batch[dp.REFERENCE_GAP][half] = 0.5 * (top[-1] + top[-2]) if top[-2] > 0 else 0.5 * top[-1]
    batch[dp.CURRICULUM_ON][:] = 1.0
    loss, metrics = run_loss(method_config(), batch, student, teacher, progress=0.8)
    want, alphas, _, _ = np_loss(batch, logits(student), logits(teacher), 0.8, CFG)
    assert np.isclose(alphas, 0.1).any() and np.isclose(alphas, 0.01).any()
    assert (gaps <= 0).any()  # a response the student already prefers: alpha0, no blow-up
    np.testing.assert_allclose(alphas[gaps < 0], 0.1)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["alpha_teacher_responses"]), alphas[:3].mean(), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["alpha_student_responses"]), alphas[3:].mean(), rtol=1e-5)


def test_non_positive_reference_gap_keeps_alpha0_without_blow_up():
    student, teacher, batch = make_case(1)
    batch[dp.CURRICULUM_ON][:] = 1.0
    batch[dp.REFERENCE_GAP][:3] = 0.0
    batch[dp.REFERENCE_GAP][3:] = -0.05
    config = method_config()
    method = make_method(config)

    def loss_of(head):
        base = views.context(1.0)
        jbatch = {k: jnp.asarray(v) for k, v in batch.items()}
        return method.loss({}, jbatch, views.view(dict(student, head=head)), views.view(teacher), base)[0]

    loss, grad = jax.jit(jax.value_and_grad(loss_of))(student["head"])
    want, alphas, _, _ = np_loss(batch, logits(student), logits(teacher), 0.5, CFG)
    np.testing.assert_allclose(alphas, 0.1)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    assert np.isfinite(np.asarray(grad)).all() and method.data_policy.measure_reference_gap


def test_token_reduction_and_constant_beta_match_numpy():
    student, teacher, batch = make_case(2)
    config = method_config(cald_reduction="token", beta_cap=1.0)
    loss, metrics = run_loss(config, batch, student, teacher, progress=0.9)
    want, _, _, _ = np_loss(batch, logits(student), logits(teacher), 0.9, CFG, reduction="token", beta_cap=1.0)
    np.testing.assert_allclose(float(metrics["beta"]), 1.0, rtol=1e-6)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_micro_batches_add_up_to_the_full_batch():
    """Per-half global counts ride in the batch: any split of the rows sums to the full loss."""
    student, teacher, batch = make_case(3)
    batch[dp.CURRICULUM_ON][:] = 1.0
    batch[dp.REFERENCE_GAP][:] = 0.01
    config = method_config()
    full, _ = run_loss(config, batch, student, teacher)
    parts = 0.0
    for rows in ([0, 4, 5], [1, 2, 3]):
        sub = {k: v[rows] for k, v in batch.items()}
        s = dict(student, hidden=student["hidden"][np.array(rows)])
        t = dict(teacher, hidden=teacher["hidden"][np.array(rows)])
        parts += float(run_loss(config, sub, s, t)[0])
    np.testing.assert_allclose(parts, float(full), rtol=1e-5)


def test_fused_path_equals_the_logits_path():
    student, teacher, batch = make_case(4)
    batch[dp.CURRICULUM_ON][:] = 1.0
    batch[dp.REFERENCE_GAP][:] = 0.02
    plain, plain_metrics = run_loss(method_config(fused="off"), batch, student, teacher)
    fused, fused_metrics = run_loss(method_config(fused="on"), batch, student, teacher)
    np.testing.assert_allclose(float(fused), float(plain), rtol=1e-5)
    for key in ("alpha_teacher_responses", "alpha_student_responses", *dp.GAP_METRICS):
        np.testing.assert_allclose(float(fused_metrics[key]), float(plain_metrics[key]), rtol=1e-5)


def test_held_out_batches_get_the_skew_kl_at_alpha0():
    student, teacher, batch = make_case(5)
    gold = {k: batch[k] for k in ("input_ids", "attention_mask", "targets", "loss_mask")}
    loss, metrics = run_loss(method_config(), gold, student, teacher, held_out=True)
    want = ref.skew_forward_kl(logits(student), logits(teacher), 0.1)
    np.testing.assert_allclose(float(loss), (want * gold["loss_mask"]).sum(), rtol=1e-5)  # ctx.num_tokens = 1
    assert set(metrics) == {"skl"}


def test_config_fields_exist_with_the_papers_defaults():
    c = base_config("distillm2")
    assert isinstance(c.on_policy, ml_collections.ConfigDict)
    assert (c.method.alpha_curriculum, c.method.skew_alpha, c.method.alpha_min, c.method.cald_reduction) == (
        True, 0.1, 0.01, "sequence")
    assert (c.method.beta_start, c.method.beta_cap, c.method.beta_ramp) == (1.0, 1.5, 0.5)
    assert (c.on_policy.temperature, c.on_policy.top_p) == (0.8, 0.95)
