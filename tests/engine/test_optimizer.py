"""The learning-rate schedule: warmup by steps or by ratio, cosine decay to the floor."""

import math

import numpy as np
import pytest

from jdistill.engine.defaults import base_config
from jdistill.engine.optimizer import schedule, warmup_steps


def optimizer_config(**overrides):
    c = base_config().optimizer
    for key, value in overrides.items():
        c[key] = value
    return c


def hand_schedule(step, peak, warmup, total, floor):
    """optax.warmup_cosine_decay_schedule written out: linear 0 -> peak, then cosine to floor at ``total``."""
    if warmup and step < warmup:
        return peak * step / warmup
    t = min(step - warmup, total - warmup) / (total - warmup)
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * t))


def test_defaults_follow_the_dskd_and_distillm_scripts():
    c = base_config().optimizer
    assert (c.weight_decay, c.min_lr_ratio, c.warmup_steps, c.warmup_ratio) == (0.01, 0.0, 0, 0.0)


@pytest.mark.parametrize("overrides,warmup", [
    ({"warmup_steps": 7}, 7),
    ({"warmup_ratio": 0.1}, 10),  # DistiLLM-2: 10% of 100 steps
    ({}, 0),
])
def test_schedule_matches_the_hand_formula(overrides, warmup):
    total, peak = 100, 2e-3
    config = optimizer_config(min_lr_ratio=0.05, **overrides)
    assert warmup_steps(config, total) == warmup
    lr = schedule(peak, config, total)
    got = [float(lr(s)) for s in range(total + 1)]
    want = [hand_schedule(s, peak, warmup, total, 0.05 * peak) for s in range(total + 1)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12)


def test_warmup_never_covers_the_whole_run():
    assert warmup_steps(optimizer_config(warmup_steps=50), 10) == 9
    assert warmup_steps(optimizer_config(warmup_ratio=0.99), 10) == 9


def test_both_warmups_or_a_bad_ratio_name_the_fields():
    with pytest.raises(ValueError, match="Set one of optimizer.warmup_steps .* and optimizer.warmup_ratio"):
        warmup_steps(optimizer_config(warmup_steps=5, warmup_ratio=0.1), 100)
    with pytest.raises(ValueError, match="optimizer.warmup_ratio in \\[0, 1\\)"):
        warmup_steps(optimizer_config(warmup_ratio=1.5), 100)
