"""MiniLLM (Gu et al., 2024, "MiniLLM: Knowledge Distillation of Large Language Models", ICLR 2024):
sequence-level reverse KL ``KL(q_θ ‖ p)`` minimised by policy gradient on the student's own samples.

Data. Each step (with probability ``method.student_probability``, 1 by
default) the step's prompts are answered in one jitted two-model decode
(:func:`jdistill.sampling.decode_paired`, rule ``'mixture'``): every token is
drawn from the teacher-mixed distribution ``p̃ = α p + (1 − α) q_θ``
(``α = method.teacher_mix_alpha``, 0.2) and carries the importance weight
``w_t = q_θ(y_t) / p̃(y_t)`` (the batch array ``rollout_weight``).

Loss, per response token ``t`` of a sampled row (``N`` the step's global
response-token count; the release's ``minillm/minillm/losses.py``, read at
``microsoft/LMOps@4f2a9de``):

* rewards (``minillm/minillm/sampler.py`` L121-131, ``reward.py``):
  ``r_t = clip((log p(y_t) − log q_θ(y_t)) / reward_scaling, ±reward_clip)``;
* long-term return (``_get_advantages_and_returns``, L27-56):
  ``A_t = Σ_{i≥t} γ^{i−t} r_i / n_t`` with ``n_t`` the response tokens from
  ``t`` on (``method.length_norm``), then whitened over the micro-batch's
  response tokens (``method.whiten_advantages``);
* policy-gradient term (``_pg_loss``, L58-96): PPO's clipped loss
  ``max(−A_t w_t ρ_t, −A_t clip(w_t ρ_t, 1 ± ε))`` with ``ρ_t = 1`` (one update
  per rollout), whose gradient is ``−A_t w_t ∇ log q_θ(y_t)`` unless the clip
  is active (:func:`jdistill.losses.policy_gradient.clipped_surrogate`);
* single-step term (``_reg_loss``, L98-108): the exact per-step reverse KL over
  the vocabulary, ``Σ_v q_θ(v) (log q_θ(v) − log p(v))``, differentiated through
  ``q_θ`` (``method.single_step``).

``L = (Σ_t m_t · pg_t + Σ_t m_t · KL_t) / N``.

Where jdistill differs from the release: one optimizer update per rollout (the
release's scripts run 4 PPO epochs over 256 rollouts, so its ratio ρ moves
away from 1); advantages whitened per micro-batch over response tokens (the
release whitens over the whole rollout batch, padding included); no
pre-training LM term (the release adds ``(1 − kd_ratio)·CE + kd_ratio·KD`` on a
separate pre-training corpus, ``pt_loss``); the return's
``include_current_reward`` (default True, the release) can be switched off to
get the paper's Eq. 5, where the policy-gradient part starts at ``R_{t+1}``
(the current step is the single-step term's alone). TRL's ``MiniLLMTrainer``
(``trl/experimental/minillm/minillm_trainer.py``) computes the same terms
with ``γ = 0`` by default, divides by a discounted length, and leaves the
advantage attached to the graph (an extra score-function term of zero mean).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jdistill import losses
from jdistill.losses import policy_gradient
from jdistill.methods import terms
from jdistill.methods.base import Method, ModelFacts
from jdistill.methods.settings import LossSettings, RolloutSettings, check_range, setting
from jdistill.rollout import ROLLOUT_WEIGHT, PairedSamplesFeed


@dataclasses.dataclass(frozen=True)
class Settings(LossSettings):
    """The release's GPT-2 recipe (``minillm/scripts/gpt2/minillm/train_base_xl.sh`` and ``arguments.py``)."""

    teacher_mix_alpha: float = setting(0.2, "alpha: tokens are drawn from alpha*teacher + (1-alpha)*student (--teacher-mixed-alpha).")
    gamma: float = setting(0.95, "Discount of the long-term return (--gamma, the release's default).")
    length_norm: bool = setting(True, "Divide each return by the number of response tokens it sums (--length-norm).")
    single_step: bool = setting(True, "Add the exact per-step reverse KL over the vocabulary (--single-step-reg).")
    include_current_reward: bool = setting(True, "The return at t includes r_t (the release); False = the paper's R_{t+1}.")
    whiten_advantages: bool = setting(True, "Whiten the returns over the micro-batch's response tokens (the release whitens).")
    reward_scaling: float = setting(0.5, "Rewards are divided by this (--reward-scaling).")
    reward_clip: float = setting(100.0, "Rewards are clipped to [-reward_clip, reward_clip] (--cliprange-reward).")
    cliprange: float = setting(0.2, "epsilon of the clipped importance-weighted surrogate (--cliprange).")
    student_probability: float = setting(1.0, "Chance a step trains on fresh mixed samples (else the dataset batch).")
    sampling: RolloutSettings = setting(
        factory=lambda: RolloutSettings(temperature=1.0, top_p=1.0, top_k=0),
        help="Rollouts as the release: temperature 1, top-p 1, top-k 0.",
    )

    def __post_init__(self):
        super().__post_init__()
        check_range("teacher_mix_alpha", self.teacher_mix_alpha, 0.0, 1.0)
        if self.teacher_mix_alpha >= 1.0:
            raise ValueError("method.teacher_mix_alpha must be < 1 (at 1 the student never samples and every "
                             f"importance weight is 0), got {self.teacher_mix_alpha}.")
        check_range("gamma", self.gamma, 0.0, 1.0)
        check_range("reward_scaling", self.reward_scaling, 0.0, low_open=True)
        check_range("reward_clip", self.reward_clip, 0.0, low_open=True)
        check_range("cliprange", self.cliprange, 0.0, 1.0, low_open=True)
        check_range("student_probability", self.student_probability, 0.0, 1.0)


def minillm_token_terms(student_logprob_BxT, teacher_logprob_BxT, weights_BxT, mask_BxT, settings: Settings):
    """``(pg_value_BxT, pg_coef_BxT, rewards_BxT)`` of MiniLLM's policy-gradient term (no gradient).

    ``pg_value`` is the clipped surrogate's token value and ``pg_coef`` the
    coefficient of ``CE_t = −log q_θ(y_t)`` in its gradient
    (:func:`jdistill.losses.policy_gradient.clipped_surrogate`).
    """
    mask = mask_BxT.astype(jnp.float32)
    rewards = (teacher_logprob_BxT - student_logprob_BxT) / settings.reward_scaling
    rewards = jnp.clip(rewards, -settings.reward_clip, settings.reward_clip) * mask
    advantages = policy_gradient.discounted_returns(rewards, mask, gamma=settings.gamma,
                                                    length_norm=settings.length_norm,
                                                    include_current=settings.include_current_reward)
    if settings.whiten_advantages:
        advantages = policy_gradient.masked_whiten(advantages, mask)
    value, coef = policy_gradient.clipped_surrogate(advantages, weights_BxT, settings.cliprange)
    return value, coef, rewards


def make(settings: Settings, facts: ModelFacts = ModelFacts()) -> Method:
    fused = terms.fused_options(settings, facts)
    vocab = terms.vocab_rows(settings, facts)

    def loss(method_params, batch, student, teacher, ctx):
        del method_params
        targets, mask = batch["targets"], batch["loss_mask"]
        weights = batch.get(ROLLOUT_WEIGHT)
        weights = jnp.ones(mask.shape, jnp.float32) if weights is None else weights
        student_lp = terms.token_logprobs(student, targets, vocab_size=vocab, fused=fused)
        teacher_lp = terms.token_logprobs(teacher, targets, vocab_size=vocab, fused=fused)
        value, coef, rewards = minillm_token_terms(student_lp, teacher_lp, weights, mask, settings)
        weighted_mask = mask * coef
        if fused is not None:
            ce = losses.fused_cross_entropy(
                student.output.hidden_states, student.model.lm_head_weight(), targets, weighted_mask,
                normalizer=ctx.num_tokens, vocab_size=vocab, logit_softcap=terms.logit_softcap(student), **fused)
        else:
            ce_BxT = losses.token_cross_entropy(student.output.logits[..., :vocab], targets)
            ce = losses.token_mean(ce_BxT, weighted_mask, normalizer=ctx.num_tokens)
        pg = losses.token_mean(value, mask, normalizer=ctx.num_tokens) + ce - jax.lax.stop_gradient(ce)
        single_step = terms.divergence_term(student, teacher, mask, "reverse_kl", normalizer=ctx.num_tokens,
                                            vocab_size=vocab, fused=fused)
        total = pg + single_step if settings.single_step else pg
        metrics = {
            "pg": pg,
            "single_step_reverse_kl": single_step,
            "reward": losses.token_mean(rewards, mask, normalizer=ctx.num_tokens),
            "rollout_weight": losses.token_mean(weights, mask, normalizer=ctx.num_tokens),
        }
        return total, metrics

    def make_feed(ctx):
        sampling = ctx.sampling_settings(**dataclasses.asdict(settings.sampling),
                                         setting="method.sampling.max_new_tokens")
        return PairedSamplesFeed(ctx, sampling, rule="mixture", method_name="minillm",
                                 probability=float(settings.student_probability),
                                 alpha=float(settings.teacher_mix_alpha))

    call = terms.logits_call(fused)
    return Method(name="minillm", loss=loss, student_call=call, teacher_call=call, make_feed=make_feed)
