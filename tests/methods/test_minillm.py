"""MiniLLM: the loss and its gradient against float64 torch transcriptions of the release's and TRL's code,
the estimator's expectation against the exact gradient of the sequence-level reverse KL, the settings."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jdistill.engine.defaults import base_config
from jdistill.methods import make_method
from jdistill.rollout import ROLLOUT_WEIGHT
from tests import fake_models as views

jax.config.update("jax_enable_x64", False)


def method_config(**overrides):
    c = base_config("minillm").method
    c.vocab_size, c.fused = 0, "off"
    for key, value in overrides.items():
        c[key] = value
    return c


def make(**overrides):
    return make_method(method_config(**overrides))


def case(seed, rows=3, length=5, dim=4, vocab=7, padded=True):
    rng = np.random.default_rng(seed)
    student = {"hidden": rng.normal(size=(rows, length, dim)), "head": rng.normal(size=(dim, vocab)),
               "embed": np.zeros((vocab, dim))}
    teacher = {"hidden": rng.normal(size=(rows, length, dim)), "head": rng.normal(size=(dim, vocab)),
               "embed": np.zeros((vocab, dim))}
    targets = rng.integers(0, vocab, size=(rows, length))
    mask = np.ones((rows, length))
    if padded:
        mask[0, 3:] = 0
        mask[1, 4:] = 0
    weights = np.exp(rng.normal(scale=0.15, size=(rows, length)))  # q/mix, near 1: some clip, most do not
    return student, teacher, targets, mask, weights


def jax_loss_and_grad(method, student, teacher, targets, mask, weights):
    batch = {"targets": jnp.asarray(targets, jnp.int32), "loss_mask": jnp.asarray(mask, jnp.float32),
             ROLLOUT_WEIGHT: jnp.asarray(weights, jnp.float32)}
    ctx = views.context(num_tokens=float(mask.sum()))
    t_side = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), teacher)

    def f(head):
        s_side = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), student) | {"head": head}
        return method.loss({}, batch, views.view(s_side), views.view(t_side), ctx)

    (loss, metrics), grad = jax.value_and_grad(f, has_aux=True)(jnp.asarray(student["head"], jnp.float32))
    return float(loss), np.asarray(grad, np.float64), metrics


# ----------------------------------------------------------------------------- the release, in torch float64


def release_loss(student, teacher, targets, mask, weights, *, gamma, length_norm, whiten, single_step,
                 reward_scaling, reward_clip, cliprange):
    """``minillm/minillm/{sampler,losses}.py`` (microsoft/LMOps@4f2a9de) on one rollout, ratio computed literally."""
    head = torch.tensor(student["head"], dtype=torch.float64, requires_grad=True)
    logits = torch.tensor(student["hidden"]) @ head
    t_logits = torch.tensor(teacher["hidden"]) @ torch.tensor(teacher["head"])
    y = torch.tensor(targets)
    mask_t = torch.tensor(mask)
    logprobs = torch.log_softmax(logits, -1).gather(-1, y[..., None])[..., 0]
    old_logprobs = logprobs.detach()
    t_logprobs = torch.log_softmax(t_logits, -1).gather(-1, y[..., None])[..., 0]
    # sampler.py: rewards = t_rewards + ent_rewards (= -logprobs), scaled, clipped.
    rewards = ((t_logprobs - old_logprobs) / reward_scaling).clamp(-reward_clip, reward_clip) * mask_t
    # losses.py _get_advantages_and_returns
    lens = torch.cumsum(mask_t, -1)
    lens = mask_t - lens + lens[:, -1:None]
    lens = torch.masked_fill(lens, lens == 0, 1)
    last, out = 0, []
    for t in reversed(range(rewards.shape[1])):
        last = rewards[:, t] + gamma * last
        out.append(last)
    adv = torch.stack(out[::-1], 1)
    if length_norm:
        adv = adv / lens
    if whiten:
        var, mean = torch.var_mean(adv)
        adv = (adv - mean) * torch.rsqrt(var + 1e-8)
    adv = adv.detach()
    # _pg_loss
    ratio = torch.exp((logprobs - old_logprobs) * mask_t) * torch.tensor(weights)
    pg1, pg2 = -adv * ratio, -adv * torch.clamp(ratio, 1 - cliprange, 1 + cliprange)
    loss = torch.sum(torch.max(pg1, pg2) * mask_t) / mask_t.sum()
    if single_step:  # _reg_loss: cross-entropy(q, p) - entropy(q), summed over the vocabulary
        q = torch.softmax(logits, -1)
        xent = -(q * torch.log_softmax(t_logits, -1)).sum(-1)
        ent = -(q * torch.log_softmax(logits, -1)).sum(-1)
        loss = loss + torch.sum((xent - ent) * mask_t) / mask_t.sum()
    loss.backward()
    return float(loss.detach()), head.grad.numpy()


RELEASE = dict(gamma=0.95, length_norm=True, single_step=True, reward_scaling=0.5, reward_clip=100.0, cliprange=0.2)


@pytest.mark.parametrize("seed", [0, 1])
def test_release_recipe_without_padding(seed):
    """Whitening over all entries (the release) equals whitening over response tokens when nothing is padded."""
    student, teacher, targets, mask, weights = case(seed, padded=False)
    loss, grad, _ = jax_loss_and_grad(make(), student, teacher, targets, mask, weights)
    want, want_grad = release_loss(student, teacher, targets, mask, weights, whiten=True, **RELEASE)
    np.testing.assert_allclose(loss, want, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("gamma,length_norm,single_step", [(0.95, True, True), (1.0, False, False), (0.5, True, False)])
def test_release_terms_with_padding(gamma, length_norm, single_step):
    student, teacher, targets, mask, weights = case(2)
    settings = dict(RELEASE, gamma=gamma, length_norm=length_norm, single_step=single_step)
    method = make(whiten_advantages=False, **{k: v for k, v in settings.items()})
    loss, grad, metrics = jax_loss_and_grad(method, student, teacher, targets, mask, weights)
    want, want_grad = release_loss(student, teacher, targets, mask, weights, whiten=False, **settings)
    np.testing.assert_allclose(loss, want, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=2e-4, atol=2e-5)
    assert np.isfinite(float(metrics["reward"])) and np.isfinite(float(metrics["single_step_reverse_kl"]))


# ----------------------------------------------------------------------------- TRL's MiniLLMTrainer, in torch


def trl_loss(student, teacher, targets, mask, *, gamma, detach_advantage):
    """``trl/experimental/minillm/minillm_trainer.py`` (compute_loss, _compute_advantage, the single-step
    F.kl_div term) with GRPO's on-policy clipped loss (ratio 1, token-level normalisation, no reward function)."""
    head = torch.tensor(student["head"], dtype=torch.float64, requires_grad=True)
    s_logp = torch.log_softmax(torch.tensor(student["hidden"]) @ head, -1)
    t_logp = torch.log_softmax(torch.tensor(teacher["hidden"]) @ torch.tensor(teacher["head"]), -1)
    y = torch.tensor(targets)
    m = torch.tensor(mask)
    s_on = s_logp.gather(-1, y[..., None])[..., 0] * m
    t_on = t_logp.gather(-1, y[..., None])[..., 0] * m
    rewards = t_on - s_on
    T = rewards.shape[1]
    gamma_pow = torch.pow(torch.tensor(gamma, dtype=torch.float64), torch.arange(T))
    adv = (rewards * gamma_pow).flip(1).cumsum(1).flip(1)
    lengths = (torch.where(m < 0.5, 1e-4, m) * gamma_pow).flip(1).cumsum(1).flip(1)
    adv = adv / lengths
    if detach_advantage:
        adv = adv.detach()
    per_token_logps = s_logp.gather(-1, y[..., None])[..., 0]
    coef_1 = torch.exp(per_token_logps - per_token_logps.detach())
    coef_2 = torch.clamp(coef_1, 1 - 0.2, 1 + 0.2)
    per_token = -torch.min(coef_1 * adv, coef_2 * adv)
    loss = (per_token * m).sum() / m.sum()
    kl = torch.nn.functional.kl_div(t_logp, s_logp, reduction="none", log_target=True)
    loss = loss + kl[m.bool()].sum() / m.sum()
    loss.backward()
    return float(loss.detach()), head.grad.numpy()


def test_matches_trl_with_gamma_one():
    """TRL's defaults aside (γ = 0), at γ = 1 its discounted length is the release's count: the same estimator,
    once TRL's advantage is detached. Attached, TRL's gradient differs by −∇A, a score-function term. (No padding:
    TRL counts a padded position as 1e-4 of a token in its lengths.)"""
    student, teacher, targets, mask, _ = case(3, padded=False)
    method = make(gamma=1.0, whiten_advantages=False, reward_scaling=1.0)
    loss, grad, _ = jax_loss_and_grad(method, student, teacher, targets, mask, np.ones_like(mask))
    want, want_grad = trl_loss(student, teacher, targets, mask, gamma=1.0, detach_advantage=True)
    np.testing.assert_allclose(loss, want, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=2e-4, atol=2e-5)
    _, attached_grad = trl_loss(student, teacher, targets, mask, gamma=1.0, detach_advantage=False)
    assert np.abs(attached_grad - want_grad).max() > 1e-3


# ----------------------------------------------------------------------------- the estimator's expectation


def test_expected_gradient_is_the_exact_sequence_reverse_kl_gradient():
    """Tabular policy, 2 steps over 3 tokens: Σ_y q(y) ∇loss(y) = ∇ KL(q ‖ p) over all 9 sequences, with the
    paper's decomposition (single-step term + R_{t+1}), γ = 1, no normalisation, whitening, clipping or weights."""
    vocab, states = 3, 4  # state 0: the first step; state 1 + y0: the second step after y0
    rng = np.random.default_rng(5)
    q_table, p_table = rng.normal(size=(states, vocab)), rng.normal(size=(states, vocab))
    sequences = list(itertools.product(range(vocab), repeat=2))
    hidden = np.stack([np.eye(states)[[0, 1 + y0]] for y0, _ in sequences])  # [9, 2, 4]
    targets = np.array(sequences)
    method = make(gamma=1.0, length_norm=False, whiten_advantages=False, include_current_reward=False,
                  reward_scaling=1.0, cliprange=1.0)

    def seq_logq(table):
        logq = jax.nn.log_softmax(jnp.asarray(hidden) @ table, -1)
        return jnp.take_along_axis(logq, jnp.asarray(targets)[..., None], -1)[..., 0].sum(-1)

    def exact_kl(table):
        logq = seq_logq(table)
        logp = seq_logq(jnp.asarray(p_table, jnp.float32))
        return jnp.sum(jnp.exp(logq) * (logq - logp))

    table = jnp.asarray(q_table, jnp.float32)
    seq_q = np.exp(np.asarray(seq_logq(table), np.float64))
    teacher = {"hidden": hidden, "head": p_table, "embed": np.zeros((vocab, states))}
    expected = np.zeros((states, vocab))
    for i in range(len(sequences)):
        student_i = {"hidden": hidden[i:i + 1], "head": q_table, "embed": np.zeros((vocab, states))}
        teacher_i = {k: (v[i:i + 1] if k == "hidden" else v) for k, v in teacher.items()}
        mask = np.ones((1, 2))
        # normaliser 1 per sequence: the summed (not averaged) per-token terms of the estimator
        batch = {"targets": jnp.asarray(targets[i:i + 1], jnp.int32), "loss_mask": jnp.asarray(mask, jnp.float32),
                 ROLLOUT_WEIGHT: jnp.ones((1, 2), jnp.float32)}
        ctx = views.context(num_tokens=1.0)
        t_view = views.view(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), teacher_i))

        def f(head, student_i=student_i, batch=batch, t_view=t_view, ctx=ctx):
            side = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), student_i) | {"head": head}
            return method.loss({}, batch, views.view(side), t_view, ctx)[0]

        expected += seq_q[i] * np.asarray(jax.grad(f)(table), np.float64)
    np.testing.assert_allclose(expected, np.asarray(jax.grad(exact_kl)(table)), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize("field,value,message", [
    ("teacher_mix_alpha", 1.0, r"method.teacher_mix_alpha must be < 1"),
    ("teacher_mix_alpha", -0.1, r"method.teacher_mix_alpha must lie in \[0, 1\]"),
    ("gamma", 1.5, r"method.gamma must lie in \[0, 1\]"),
    ("reward_scaling", 0.0, r"method.reward_scaling must be > 0"),
    ("cliprange", 0.0, r"method.cliprange must lie in \(0, 1\]"),
    ("student_probability", 2.0, r"method.student_probability must lie in \[0, 1\]"),
])
def test_bad_settings(field, value, message):
    with pytest.raises(ValueError, match=message):
        make(**{field: value})


def test_eval_batches_without_rollout_weights_use_one():
    student, teacher, targets, mask, _ = case(4)
    method = make()
    batch = {"targets": jnp.asarray(targets, jnp.int32), "loss_mask": jnp.asarray(mask, jnp.float32)}
    ctx = views.context(num_tokens=float(mask.sum()))
    s, t = (views.view(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), side)) for side in (student, teacher))
    loss, metrics = method.loss({}, batch, s, t, ctx)
    ones, _, _ = jax_loss_and_grad(method, student, teacher, targets, mask, np.ones_like(mask))
    np.testing.assert_allclose(float(loss), ones, rtol=1e-6)
    np.testing.assert_allclose(float(metrics["rollout_weight"]), 1.0, rtol=1e-6)
