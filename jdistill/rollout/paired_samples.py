"""Per-step samples drawn by the student and the teacher together (Speculative KD, MiniLLM).

:class:`PairedSamplesFeed` answers each step's prompts with
:func:`jdistill.sampling.generate_paired` (one jitted two-model decode; the
rule ``'speculative'`` or ``'mixture'``) with probability ``probability``
(a host coin keyed by (seed, step), so a resumed run makes the same choices),
else trains on the dataset batch. Every batch it returns carries two extra
``[B, L]`` float32 arrays, aligned with ``loss_mask`` (position ``t`` holds the
value of the token at ``t + 1``):

* :data:`ROLLOUT_WEIGHT`: ``q(y) / mix(y)``, the student's probability of the
  token over the probability of the distribution it was drawn from (1 on
  dataset rows and under ``'speculative'``);
* :data:`ROLLOUT_REPLACED`: 1 where the teacher replaced the student's proposal.

Metrics: ``data_source``, ``steps_on_*``, ``replaced_fraction`` (replaced
share of the step's generated tokens) and ``mean_rollout_weight``.
"""

from __future__ import annotations

import numpy as np

from jdistill.rollout.feed import (
    COIN,
    DATASET,
    SOURCE_NAMES,
    STUDENT_KEY,
    STUDENT_SAMPLES,
    Feed,
    FeedContext,
    OnPolicyConfigError,
    as_rows,
    host_rng,
    stream_key,
)
from jdistill.sampling import PAIRED_RULES, SamplingSettings, generate_paired

ROLLOUT_WEIGHT = "rollout_weight"
ROLLOUT_REPLACED = "rollout_replaced"


def rollout_arrays(loss_mask: np.ndarray, prompt_lens, responses) -> dict[str, np.ndarray]:
    """The per-position arrays of generated rows (``responses[i]`` a :class:`PairedResponse` or ``None``)."""
    weight = np.ones(loss_mask.shape, np.float32)
    replaced = np.zeros(loss_mask.shape, np.float32)
    width = loss_mask.shape[1]
    for row, (prompt_len, response) in enumerate(zip(prompt_lens, responses)):
        if response is None:
            continue
        n = min(len(response.ids), width - prompt_len)  # the tokens as_rows kept
        if n <= 0:
            continue
        positions = slice(prompt_len - 1, prompt_len - 1 + n)
        weight[row, positions] = np.exp(response.student_logprobs[:n] - response.behaviour_logprobs[:n])
        replaced[row, positions] = response.replaced[:n]
    return {ROLLOUT_WEIGHT: weight, ROLLOUT_REPLACED: replaced}


class PairedSamplesFeed(Feed):
    """Student + teacher samples of the step's prompts with probability ``probability`` (see the module doc)."""

    def __init__(self, ctx: FeedContext, sampling: SamplingSettings, *, rule: str, method_name: str,
                 probability: float = 1.0, top_k: int = 1, alpha: float = 0.0):
        if rule not in PAIRED_RULES:
            raise OnPolicyConfigError(f"rule must be one of {PAIRED_RULES}, got {rule!r}")
        ctx.check_generation(method_name, needs_teacher=True)
        # Both models read and write one token stream, so one stop policy ends it: the student's.
        self.ctx, self.sampling, self.rule = ctx, sampling, rule
        self.probability, self.top_k, self.alpha = float(probability), int(top_k), float(alpha)
        restored = ctx.restored or {}
        self.sources = ("dataset", "student_samples")
        self.counts = {name: int(restored.get("counts", {}).get(name, 0)) for name in self.sources}

    def _paired_batch(self, step, position, state):
        ctx = self.ctx
        prompts = ctx.prompts(position)
        responses = generate_paired(
            ctx.student(state), ctx.teacher, prompts, self.sampling, ctx.student_stop, rule=self.rule,
            key=stream_key(ctx.seed, STUDENT_KEY, step), top_k=self.top_k, alpha=self.alpha,
            batch_size=len(prompts), mesh=ctx.mesh, width=ctx.prompt_width,
        )
        batch = ctx.collate_rows(as_rows(prompts, [r.ids for r in responses], ctx.max_len))
        batch.update(rollout_arrays(batch["loss_mask"], [len(p) for p in prompts], responses))
        generated = sum(len(r.ids) for r in responses)
        metrics = {
            "replaced_fraction": float(sum(r.replaced.sum() for r in responses) / max(generated, 1)),
            "mean_rollout_weight": float(
                sum(np.exp(r.student_logprobs - r.behaviour_logprobs).sum() for r in responses) / max(generated, 1)),
        }
        return batch, metrics

    def batch(self, step, position, host_batch, state):
        r = float(host_rng(self.ctx.seed, step, COIN).random())
        metrics = {"replaced_fraction": 0.0, "mean_rollout_weight": 1.0}
        if r < self.probability:
            source = STUDENT_SAMPLES
            host_batch, metrics = self._paired_batch(step, position, state)
        else:
            source = DATASET
            host_batch = dict(host_batch)
            host_batch.update(rollout_arrays(np.asarray(host_batch["loss_mask"]), [], []))
        self.counts[SOURCE_NAMES[source]] += 1
        metrics.update({"data_source": float(source), **{f"steps_on_{k}": float(v) for k, v in self.counts.items()}})
        return host_batch, metrics

    def state_dict(self) -> dict:
        return {"counts": dict(self.counts)}
