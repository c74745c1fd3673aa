"""CALD (DistiLLM-2) and its curriculum against numpy, with its gradient semantics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill import losses
from tests.losses import numpy_reference as ref


def _batch(seed, batch=3, length=5, vocab=9):
    rng = np.random.default_rng(seed)
    s = (rng.normal(size=(batch, length, vocab)) * 1.5).astype(np.float32)
    t = (rng.normal(size=(batch, length, vocab)) * 1.5).astype(np.float32)
    mask = np.ones((batch, length), bool)
    mask[:, :1] = False  # a prompt position
    mask[-1, 3:] = False  # right padding
    return s, t, mask


@pytest.mark.parametrize("reduction", ["sequence", "token"])
def test_cald_matches_numpy(reduction):
    st, tt, mt = _batch(0)
    ss, ts, ms = _batch(1, batch=2, length=6)  # the two halves need not share a shape
    alpha_t = np.array([0.1, 0.05, 0.02], np.float32)
    alpha_s = np.array([0.1, 0.01], np.float32)
    got = jax.jit(lambda *a: losses.cald(*a, alpha_t=alpha_t, alpha_s=alpha_s, beta=0.7, temperature=1.5, reduction=reduction))(
        st, tt, mt, ss, ts, ms
    )
    want = ref.cald(st, tt, mt, ss, ts, ms, alpha_t, alpha_s, 0.7, temperature=1.5, reduction=reduction)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_each_half_sees_only_its_own_rows():
    st, tt, mt = _batch(2)
    ss, ts, ms = _batch(3)
    base = losses.cald(st, tt, mt, ss, ts, ms, beta=0.0)
    # beta = 0: the student-response half takes no part at all.
    np.testing.assert_allclose(losses.cald(st, tt, mt, ss * 5, ts - 2, ms, beta=0.0), base, rtol=1e-7)
    # Masked positions (prompt, padding) take no part either.
    st2 = st.copy()
    st2[~mt] = 100.0
    np.testing.assert_allclose(losses.cald(st2, tt, mt, ss, ts, ms, beta=0.0), base, rtol=1e-7)
    expected = ref.sequence_mean(ref.skew_forward_kl(st, tt, 0.1), mt)
    np.testing.assert_allclose(base, expected, rtol=1e-5)


def test_gradient_stops_through_the_srkl_mixture():
    """d CALD / d student logits on student rows = beta * gradient of SRKL with q frozen in the mixture."""
    st, tt, mt = _batch(4, batch=1, length=3, vocab=5)
    ss, ts, ms = _batch(5, batch=1, length=3, vocab=5)
    beta, alpha = 0.6, 0.2
    grad_ss = jax.grad(lambda x: losses.cald(st, tt, mt, x, ts, ms, alpha_s=alpha, beta=beta))(ss)
    q_fixed = ref.softmax(ss)

    def frozen(x):
        return beta * ref.sequence_mean(ref.skew_reverse_kl(x, ts, alpha, q_in_mixture=q_fixed), ms)

    numeric = ref.numeric_grad(frozen, ss)
    np.testing.assert_allclose(grad_ss, numeric, rtol=1e-3, atol=1e-5)
    # The teacher gets no gradient from either half when called through stop_gradient by the engine,
    # but the kernel itself is a function of both: the student-side SKL gradient flows through the mixture.
    grad_st = jax.grad(lambda x: losses.cald(x, tt, mt, ss, ts, ms, alpha_t=alpha, beta=beta))(st)
    assert np.abs(np.asarray(grad_st)).max() > 0


def test_beta_out_of_range_is_rejected():
    st, tt, mt = _batch(6)
    with pytest.raises(ValueError, match="beta must lie in \\[0, 1\\]"):
        losses.cald(st, tt, mt, st, tt, mt, beta=1.5)
    with pytest.raises(ValueError, match="Unknown reduction"):
        losses.cald(st, tt, mt, st, tt, mt, reduction="batch")


def test_curriculum_alpha_matches_numpy():
    # alpha moves between alpha_min and alpha0 only for gaps in [m (1-a0)/(1-a_min), m]:
    # choose per-sequence gaps around that band, plus one where the student is ahead.
    rng = np.random.default_rng(7)
    gaps = np.array([0.2, 0.195, 0.19, 0.185, 0.3, -0.1, 0.1], np.float32)
    q_bar = np.float32(0.5)
    length = 8
    mask = rng.random((len(gaps), length)) < 0.7
    mask[:, 0] = True
    # Constant log-probabilities on response tokens (so the geometric means are exact),
    # noise elsewhere that the mask must remove.
    teacher_lp = np.where(mask, np.log(q_bar + gaps)[:, None], rng.normal(size=mask.shape)).astype(np.float32)
    student_lp = np.where(mask, np.log(q_bar), rng.normal(size=mask.shape)).astype(np.float32)
    np.testing.assert_allclose(losses.probability_gap(teacher_lp, student_lp, mask), gaps, atol=1e-6)
    reference_gap = 0.2
    got = jax.jit(lambda a, b, m: losses.curriculum_alpha(a, b, m, reference_gap=reference_gap))(
        teacher_lp, student_lp, mask
    )
    want = ref.curriculum_alpha(teacher_lp, student_lp, mask, reference_gap)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    hand = np.clip(1 - 0.9 * reference_gap / (gaps + 1e-5), 0.01, 0.1)
    np.testing.assert_allclose(got, hand, rtol=1e-4, atol=1e-6)
    # The student ahead of the teacher (gap -0.1): the release's formula exceeds 1 and clips to alpha0.
    np.testing.assert_allclose(got[gaps < 0], [0.1], rtol=1e-6)
    assert len(set(np.round(np.asarray(got), 5))) >= 5  # the curriculum really varies per sequence


def test_curriculum_alpha_at_the_reference_gap_is_alpha0():
    teacher_lp = np.log(np.full((1, 4), 0.8, np.float32))
    student_lp = np.log(np.full((1, 4), 0.5, np.float32))
    mask = np.ones((1, 4), bool)
    alpha = losses.curriculum_alpha(teacher_lp, student_lp, mask, reference_gap=0.3, alpha0=0.1)
    np.testing.assert_allclose(alpha, [0.1], rtol=1e-5)
    # Half the reference gap: 1 - 0.9 * 2 < 0.01, clipped to alpha_min.
    alpha = losses.curriculum_alpha(teacher_lp, student_lp, mask, reference_gap=0.6, alpha0=0.1, alpha_min=0.01)
    np.testing.assert_allclose(alpha, [0.01], rtol=1e-5)
    # In between: gap 0.3, m = 0.32 -> 1 - 0.9 * 0.32 / (0.3 + 1e-5) = 0.040032.
    alpha = losses.curriculum_alpha(teacher_lp, student_lp, mask, reference_gap=0.32)
    np.testing.assert_allclose(alpha, [0.0400320], rtol=1e-4)


def test_curriculum_alpha_zero_denominator_is_alpha_min():
    # p_bar - q_bar = -1e-5 exactly cancels the release's epsilon: the limit from above, alpha_min.
    teacher_lp = np.log(np.full((1, 2), 0.25, np.float64))
    student_lp = np.log(np.full((1, 2), 0.25 + 1e-5, np.float64))
    mask = np.ones((1, 2), bool)
    alpha = losses.curriculum_alpha(
        teacher_lp.astype(np.float32), student_lp.astype(np.float32), mask, reference_gap=0.1, eps=0.0
    )
    np.testing.assert_allclose(alpha, [0.1], rtol=1e-6)  # eps=0: gap < 0 -> alpha0
    equal = np.log(np.full((1, 2), 0.25, np.float32))
    alpha = losses.curriculum_alpha(equal, equal, mask, reference_gap=0.1, eps=0.0)
    np.testing.assert_allclose(alpha, [0.01], rtol=1e-6)  # gap + eps == 0 -> alpha_min


def test_curriculum_alpha_bad_arguments():
    x = np.zeros((1, 2), np.float32)
    m = np.ones((1, 2), bool)
    with pytest.raises(ValueError, match="reference_gap must be > 0"):
        losses.curriculum_alpha(x, x, m, reference_gap=0.0)
    with pytest.raises(ValueError, match="alpha_min .* must not exceed alpha0"):
        losses.curriculum_alpha(x, x, m, reference_gap=0.1, alpha0=0.05, alpha_min=0.1)
