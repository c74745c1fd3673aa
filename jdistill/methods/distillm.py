"""DistiLLM (Ko et al., 2024): skew KL with adaptive off-policy student samples.

The loss is the skew KL ``KL(p ‖ α p + (1 - α) q)`` (``method.divergence=
skew_forward_kl``) or the skew reverse KL ``KL(q ‖ (1 - α) p + α q)``
(``skew_reverse_kl``), α = ``method.skew_alpha`` (0.1), per response token.

The data follow the adaptive off-policy rule
(:class:`~jdistill.methods.data_policy.AdaptiveReplay`): each step draws
``r ~ U(0, 1)`` from a host RNG keyed by (seed, step); with
``φ_s = φ (1 - progress)``, ``r < φ_s`` (or ``r < φ`` while the replay buffer
is not full) generates fresh student samples for the step's prompts (temperature
1, top-p 1 in the paper), pushes them into the replay buffer
(``method.replay_capacity``, 1000) and trains on them; else ``r < φ`` trains on
a random batch from the buffer; else on the dataset batch. At every evaluation
a validation loss at least ``method.phi_trigger`` (0.1) above the previous one
raises φ by ``method.phi_increment`` (0.1), up to 1; φ starts at
``method.phi_init`` (0 for GPT-2 in the paper).
"""

from __future__ import annotations

import ml_collections

from jdistill.methods.base import Method
from jdistill.methods.data_policy import AdaptiveReplay
from jdistill.methods.divergence_loss import make_divergence_method

SKEW_DIVERGENCES = ("skew_forward_kl", "skew_reverse_kl")


def make(config: ml_collections.ConfigDict) -> Method:
    if config.divergence not in SKEW_DIVERGENCES:
        raise ValueError(
            f"DistiLLM trains with a skew divergence; set method.divergence to one of {SKEW_DIVERGENCES} "
            f"(got {config.divergence!r})."
        )
    if int(config.replay_capacity) < 1:
        raise ValueError(f"method.replay_capacity must be >= 1, got {config.replay_capacity}.")
    for field in ("phi_init", "phi_increment"):
        if not 0.0 <= float(config[field]) <= 1.0:
            raise ValueError(f"method.{field} must lie in [0, 1], got {config[field]}.")
    policy = AdaptiveReplay(
        capacity=int(config.replay_capacity), phi_init=float(config.phi_init),
        increment=float(config.phi_increment), trigger=float(config.phi_trigger),
    )
    return make_divergence_method(config, name="distillm", data_policy=policy)
