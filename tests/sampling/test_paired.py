"""Two-model decoding: Speculative KD's top-K verification traced by hand, MiniLLM's teacher-mixed sampling."""

import jax
import numpy as np
import pytest

from jdistill.sampling import SamplingSettings, StopTokens, generate_paired
from jdistill.sampling.paired import teacher_rank_accepts
from tests.sampling.scripted_models import ScriptedDecoder

V, EOS, BIG = 6, 5, 60.0
STOP = StopTokens((EOS,), 0)


def peaked(token, *, others=0.0):
    row = np.full(V, others, np.float32)
    row[token] = BIG
    return row


def speculative(student_table, teacher_table, *, top_k, steps=3, rows=2, seed=0):
    student = ScriptedDecoder(student_table, by="token", prompt_width=2)
    teacher = ScriptedDecoder(teacher_table, by="position", prompt_width=2)
    prompts = [np.array([2, 1], np.int32)] * rows
    return generate_paired(student, teacher, prompts, SamplingSettings(max_new_tokens=steps, temperature=1.0), STOP,
                           rule="speculative", key=jax.random.key(seed), top_k=top_k, batch_size=rows, width=2)


# The student's logits follow the token it was last fed; the teacher's follow the position.
STUDENT = np.stack([peaked(3), peaked(2), peaked(4), peaked(0), peaked(1), peaked(0)])
TEACHER = np.array([
    [0.0, 1.0, 5.0, 4.0, -2.0, -9.0],   # step 0: top-2 {2, 3}; the student's 2 is kept
    [1.0, 2.0, 3.0, BIG, -1.0, -9.0],   # step 1: top-2 {3, 2}; the student's 4 is replaced by the teacher's 3
    [3.0, -5.0, 2.0, 0.0, -3.0, -9.0],  # step 2: top-2 {0, 2}; the student, fed 3, proposes 0: kept
], np.float32)


def test_hand_traced_three_steps():
    for response in speculative(STUDENT, TEACHER, top_k=2):
        # Fed the teacher's 3 (not its own 4), the student proposes 0 at step 2; fed 4 it would propose 1,
        # which the teacher's top-2 {0, 2} rejects.
        np.testing.assert_array_equal(response.ids, [2, 3, 0])
        np.testing.assert_array_equal(response.replaced, [False, True, False])
        # Under 'speculative' the behaviour log-prob is the student's own: weight 1.
        np.testing.assert_array_equal(response.behaviour_logprobs, response.student_logprobs)
        np.testing.assert_allclose(response.student_logprobs, [0.0, np.log(np.exp(0) / (np.exp(BIG) + 5)), 0.0],
                                   atol=1e-6)


def test_top_k_of_the_vocabulary_keeps_every_proposal_and_one_keeps_only_the_argmax():
    everything = speculative(STUDENT, TEACHER, top_k=V)[0]
    np.testing.assert_array_equal(everything.ids, [2, 4, 1])  # the student alone: 1 -> 2 -> 4 -> 1
    assert not everything.replaced.any()
    argmax_only = speculative(STUDENT, TEACHER, top_k=1)[0]
    np.testing.assert_array_equal(argmax_only.ids[:2], [2, 3])  # 2 is the teacher's argmax at step 0; 4 is not
    np.testing.assert_array_equal(argmax_only.replaced[:2], [False, True])


def test_a_stop_token_ends_the_row():
    student = STUDENT.copy()
    student[3] = peaked(EOS)  # fed the replacement 3, the student proposes the stop token
    teacher = TEACHER.copy()
    teacher[2] = peaked(EOS)
    response = speculative(student, teacher, top_k=2, steps=5)[0]
    np.testing.assert_array_equal(response.ids, [2, 3, EOS])


def test_ties_with_the_kth_logit_are_kept():
    logits = np.array([[3.0, 1.0, 1.0, 0.0, 1.0, -1.0]], np.float32)
    kept = [bool(teacher_rank_accepts(logits, np.array([t]), 2)[0]) for t in range(V)]
    assert kept == [True, True, True, False, True, False]


@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_teacher_mixed_sampling_frequencies_and_weights(alpha):
    q_logits = np.array([[0.0, 1.0, 2.0, -1.0, 0.5, -3.0]], np.float32)
    p_logits = np.array([[2.0, 0.0, -1.0, 1.0, -2.0, -3.0]], np.float32)
    student = ScriptedDecoder(q_logits, by="position", prompt_width=1)
    teacher = ScriptedDecoder(p_logits, by="position", prompt_width=1)
    rows = 4000
    out = generate_paired(student, teacher, [np.array([1], np.int32)] * rows,
                          SamplingSettings(max_new_tokens=1, temperature=1.0), STOP, rule="mixture",
                          key=jax.random.key(3), alpha=alpha, batch_size=rows, width=1)
    q = np.exp(q_logits[0].astype(np.float64)); q /= q.sum()
    p = np.exp(p_logits[0].astype(np.float64)); p /= p.sum()
    mix = alpha * p + (1 - alpha) * q
    tokens = np.array([r.ids[0] for r in out])
    freq = np.bincount(tokens, minlength=V) / rows
    np.testing.assert_array_less(np.abs(freq - mix), 4 * np.sqrt(mix * (1 - mix) / rows) + 1e-9)
    np.testing.assert_allclose([r.student_logprobs[0] for r in out], np.log(q[tokens]), atol=1e-5)
    np.testing.assert_allclose([r.behaviour_logprobs[0] for r in out], np.log(mix[tokens]), atol=1e-5)
    assert not any(r.replaced.any() for r in out)
