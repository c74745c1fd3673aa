"""Rematerialisation (activation checkpointing) policies for decoder blocks.

``"none"`` keeps every activation; ``"full"`` recomputes the whole block in
the backward pass; ``"dots"`` saves matmul outputs without batch dimensions
and recomputes the rest.
"""

import jax

# Policy names -> ``jax.checkpoint`` policies (``None`` entry: no remat).
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def apply_remat(fn, policy_name: str):
    """Wraps ``fn`` in ``jax.checkpoint`` according to ``policy_name``."""
    policy = REMAT_POLICIES[policy_name]
    if policy is None:
        return fn
    return jax.checkpoint(fn, policy=policy, prevent_cse=False)
