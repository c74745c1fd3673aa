"""The on-policy feeds and the replay buffer, on hand-made examples (no models, no compiles).

Generation is replaced by a stub that answers each prompt with a known
response, so the tests check the host-side rules exactly: which data a step
uses, the DistiLLM φ rule, the replay buffer, DistiLLM-2's row layout, counts
and reference gaps, and what goes into and comes back from a checkpoint.
"""

import json

import numpy as np
import pytest

from jdistill.data.batching import BatchSource, DataPosition
from jdistill.data.tokenize import TokenizedExample, TokenizedSide
from jdistill.engine import on_policy
from jdistill.engine.replay_buffer import ReplayBuffer
from jdistill.methods import data_policy as dp
from jdistill.methods import distillm

PAD, EOS = 0, 2


class Writer:
    def __init__(self):
        self.records = []

    def write(self, step, metrics, *, split):
        self.records.append((step, split, dict(metrics)))


class Config(dict):
    """Attribute access over nested dicts, enough for the feeds' reads."""

    def __getattr__(self, key):
        value = self[key]
        return Config(value) if isinstance(value, dict) else value


def examples(n=12):
    out = []
    for i in range(n):
        prompt = [1, 10 + i % 5] + [3] * (i % 3)
        ids = np.asarray(prompt + [20 + i, EOS], np.int32)
        out.append(TokenizedExample(id=f"e{i}", student=TokenizedSide(ids, len(prompt))))
    return out


def make_ctx(tmp_path, *, batch_size=4, total_steps=30, seed=0):
    config = Config(train={"seed": seed}, logging={"progress_bar": False}, on_policy={"batch_size": 4})
    source = BatchSource(examples(), batch_size=batch_size, seed=seed, buckets=(16,), pad_id=PAD)
    sampling = on_policy.Sampling(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=4, max_len=16,
                                  eos_id=EOS, pad_id=PAD)
    ctx = on_policy.FeedContext(
        config=config, source=source, collate_kwargs=dict(buckets=(16,), pad_id=PAD), student_graphdef=None,
        teacher="teacher", sampling=sampling, mesh=None, writer=Writer(), workdir=str(tmp_path),
        total_steps=total_steps,
    )
    ctx.student = lambda state: "student"  # the stub below tells the models apart by name
    return ctx


@pytest.fixture
def generation(monkeypatch):
    """Stub generation: model 'teacher' answers [50 + len(prompt), EOS], 'student' [60 + len(prompt), 61]."""
    calls = []

    def fake(model, prompts, sampling_, *, key, batch_size, mesh, width, progress=None):
        assert width == 16 and all(len(p) <= width for p in prompts)
        calls.append((model, len(prompts)))
        first = 50 if model == "teacher" else 60
        return [np.asarray([first + len(p), EOS if model == "teacher" else 61], np.int32) for p in prompts]

    monkeypatch.setattr(on_policy, "generate_responses", fake)
    return calls


# ----------------------------------------------------------------------------- replay buffer


def test_replay_buffer_keeps_the_newest_capacity_rows_and_round_trips_through_json():
    buffer = ReplayBuffer(3)
    rows = [TokenizedSide(np.asarray([1, 2, i], np.int32), 2) for i in range(5)]
    buffer.push(rows[:2])
    assert len(buffer) == 2 and not buffer.full
    buffer.push(rows[2:])
    assert len(buffer) == 3 and buffer.full
    state = json.loads(json.dumps(buffer.state_dict()))
    assert [ids[-1] for ids in state["ids"]] == [2, 3, 4]  # first in, first out
    restored = ReplayBuffer(3)
    restored.load_state_dict(state)
    picks = restored.sample(3, np.random.default_rng(0))
    assert sorted(int(r.ids[-1]) for r in picks) == [2, 3, 4]  # without replacement
    with pytest.raises(ValueError, match="replay_capacity"):
        ReplayBuffer(0)


# ----------------------------------------------------------------------------- DistiLLM φ rule


def distillm_feed(tmp_path, restored=None, **spec):
    spec = dp.AdaptiveReplay(**{"capacity": 8, "phi_init": 0.0, **spec})
    return on_policy.StepSamplesFeed(spec, make_ctx(tmp_path), restored)


def release_phi_trajectory(losses, phi, loss_eps=0.1):
    """DistiLLM's finetune.py, transcribed: prev_avg_loss from the step-0 evaluation, then per evaluation
    ``if curr >= prev + loss_eps: threshold = min(threshold + 0.1, 1.0); prev = curr``."""
    prev, out = losses[0], []
    for curr in losses[1:]:
        if curr >= prev + loss_eps:
            phi = min(phi + 0.1, 1.0)
            prev = curr
        out.append(phi)
    return out


@pytest.mark.parametrize("trajectory", [
    [2.0 + 0.06 * i for i in range(6)],  # a slow upward drift: the release ends at φ = 0.2
    [1.0, 1.05, 1.16, 1.10, 1.21, 1.27, 1.3, 0.9, 1.0, 1.5],  # rises, a fall, a jump
    [3.0 - 0.01 * i for i in range(5)] + [2.0 + i for i in range(12)],  # falls, then rises past the cap
])
def test_phi_follows_the_release_rule_step_by_step(tmp_path, trajectory):
    feed = distillm_feed(tmp_path, phi_init=0.0, increment=0.1, trigger=0.1)
    assert feed.evaluate_at_start  # the step-0 evaluation sets the reference
    got = []
    for i, loss in enumerate(trajectory):
        feed.after_eval(10 * i, {"student_ce": loss, "loss": 123.0})  # the method's loss is not the signal
        got.append(feed.phi_state.phi)
    want = release_phi_trajectory(trajectory, 0.0)
    assert got[0] == 0.0
    np.testing.assert_allclose(got[1:], want, atol=1e-12)
    assert [r[2]["phi"] for r in feed.ctx.writer.records] == pytest.approx(got)


def test_slow_drift_raises_phi_twice_in_five_evaluations(tmp_path):
    """The issue's simulation: +0.06 per evaluation. Resetting the reference at every evaluation
    (the old rule) never fires; keeping it until the trigger fires reaches φ = 0.2."""
    state = distillm.PhiState(0.0)
    for i in range(6):
        state = distillm.update_phi(state, 2.0 + 0.06 * i)
    assert state.phi == pytest.approx(0.2) and state.reference_loss == pytest.approx(2.24)


def test_distillm_data_sources_follow_the_phi_rule_and_are_logged(tmp_path, generation):
    feed = distillm_feed(tmp_path, phi_init=0.5)
    source = feed.ctx.source
    seen = []
    position = DataPosition()
    for step in range(30):
        full = len(feed.replay) >= 8
        batch, metrics = feed.batch(step, position, source.batch_at(position), state=None)
        r = float(np.random.default_rng([0, step, on_policy._COIN]).random())
        phi_s = 0.5 * (1 - (step + 1) / 30)  # the release's global_step starts at 1
        expected = (on_policy.STUDENT_SAMPLES if r < phi_s or (r < 0.5 and not full) else
                    on_policy.REPLAY if r < 0.5 else on_policy.DATASET)
        assert metrics["data_source"] == expected, (step, r, full)
        seen.append(int(metrics["data_source"]))
        if metrics["data_source"] == on_policy.STUDENT_SAMPLES:
            # Student rows: prompt + [60 + len(prompt), 61], trained on the response only.
            rows = feed.ctx.batch_rows(position)
            lens = [source.examples[i].student.prompt_len for i in rows]
            np.testing.assert_array_equal(batch["loss_mask"].sum(-1), [2.0] * 4)
            assert [int(batch["input_ids"][b, n]) for b, n in enumerate(lens)] == [60 + n for n in lens]
        if metrics["data_source"] == on_policy.REPLAY:
            assert set(batch["input_ids"][:, :].ravel().tolist()) & set(range(60, 70))
        if metrics["data_source"] == on_policy.DATASET:
            np.testing.assert_array_equal(batch["input_ids"], source.batch_at(position)["input_ids"])
        position = source.advance(position)
    counts = {name: seen.count(code) for code, name in on_policy.SOURCE_NAMES.items()}
    assert metrics["steps_on_student_samples"] == counts["student_samples"] > 0
    assert metrics["steps_on_replay"] == counts["replay"] > 0
    assert metrics["steps_on_dataset"] == counts["dataset"] > 0
    assert metrics["replay_size"] == 8 and len(generation) == counts["student_samples"]


def test_distillm_fills_the_buffer_with_fresh_samples_before_replaying(tmp_path, generation):
    """At the last step φ_s = 0; r < φ still generates while the buffer is not full, then replays."""
    feed = distillm_feed(tmp_path, phi_init=1.0)
    step = 29  # φ_s = 1 · (1 - 30/30) = 0
    _, first = feed.batch(step, DataPosition(), None, state=None)
    _, second = feed.batch(step, DataPosition(), None, state=None)
    _, third = feed.batch(step, DataPosition(), None, state=None)
    assert [first["data_source"], second["data_source"], third["data_source"]] == [
        on_policy.STUDENT_SAMPLES, on_policy.STUDENT_SAMPLES, on_policy.REPLAY]
    assert third["replay_size"] == 8 and len(generation) == 2


def test_distillm_state_survives_a_checkpoint(tmp_path, generation):
    feed = distillm_feed(tmp_path, phi_init=1.0)
    position = DataPosition()
    for step in range(3):
        feed.batch(step, position, feed.ctx.source.batch_at(position), state=None)
        position = feed.ctx.source.advance(position)
    feed.after_eval(3, {"student_ce": 0.7})
    state = json.loads(json.dumps(feed.state_dict()))
    resumed = distillm_feed(tmp_path, restored=state, phi_init=1.0)
    assert resumed.phi_state == feed.phi_state == distillm.PhiState(1.0, 0.7)
    assert resumed.counts == feed.counts and len(resumed.replay) == len(feed.replay) == 8
    a = feed.batch(3, position, None, state=None)
    b = resumed.batch(3, position, None, state=None)
    assert a[1] == b[1]  # same coin flip, same source, same counters
    np.testing.assert_array_equal(a[0]["input_ids"], b[0]["input_ids"])


# ----------------------------------------------------------------------------- GKD / ImitKD


def test_student_probability_schedule_and_seq_kd_sources(tmp_path, generation):
    assert dp.StudentSamples(0.0, 1.0).probability(0.25) == pytest.approx(0.25)
    assert dp.StudentSamples(0.5, 0.5).probability(0.9) == pytest.approx(0.5)
    feed = on_policy.StepSamplesFeed(dp.StudentSamples(0.5, 0.5, teacher_samples=True), make_ctx(tmp_path), None)
    position = DataPosition()
    for step in range(12):
        r = float(np.random.default_rng([0, step, on_policy._COIN]).random())
        batch, metrics = feed.batch(step, position, None, state=None)
        want = on_policy.STUDENT_SAMPLES if r < 0.5 else on_policy.TEACHER_SAMPLES
        assert metrics["data_source"] == want
        marker = 60 if want == on_policy.STUDENT_SAMPLES else 50
        prompt_len = int(batch["loss_mask"][0].argmax()) + 1
        assert int(batch["input_ids"][0, prompt_len]) == marker + prompt_len
        position = feed.ctx.source.advance(position)
    assert metrics["steps_on_student_samples"] + metrics["steps_on_teacher_samples"] == 12
    assert [m for m, _ in generation].count("teacher") == metrics["steps_on_teacher_samples"]


# ----------------------------------------------------------------------------- DistiLLM-2 epochs


def epoch_feed(tmp_path, restored=None, resume_epoch=None):
    return on_policy.EpochResponsesFeed(dp.EpochResponses(), make_ctx(tmp_path), restored, resume_epoch)


def test_epoch_batches_hold_teacher_then_student_rows_with_per_half_counts(tmp_path, generation):
    feed = epoch_feed(tmp_path)
    position = DataPosition()
    batch, metrics = feed.batch(0, position, None, state=None)
    assert generation == [("teacher", 12), ("student", 12)]  # every prompt, once per model
    rows = feed.ctx.batch_rows(position)
    lens = [feed.ctx.source.examples[i].student.prompt_len for i in rows]
    assert batch["input_ids"].shape[0] == 8
    np.testing.assert_array_equal(batch[dp.STUDENT_ROW], [0, 0, 0, 0, 1, 1, 1, 1])
    assert [int(batch["input_ids"][b, lens[b]]) for b in range(4)] == [50 + n for n in lens]
    assert [int(batch["input_ids"][4 + b, lens[b]]) for b in range(4)] == [60 + n for n in lens]
    np.testing.assert_array_equal(batch[dp.HALF_SEQUENCES], [4] * 8)
    np.testing.assert_array_equal(batch[dp.HALF_TOKENS], [8] * 8)  # 2 response tokens per row
    np.testing.assert_array_equal(batch[dp.CURRICULUM_ON], 0)
    assert metrics == {"data_source": float(on_policy.EPOCH_RESPONSES), "curriculum_on": 0.0}
    feed.batch(1, feed.ctx.source.advance(position), None, state=None)
    assert len(generation) == 2  # no new generation inside an epoch


def test_reference_gap_is_the_first_epochs_mean_and_turns_the_curriculum_on(tmp_path, generation):
    feed = epoch_feed(tmp_path)
    source = feed.ctx.source
    position = DataPosition()
    gaps = [(0.3, 0.1), (0.5, -0.1), (0.4, 0.3)]
    for step, (g_t, g_s) in enumerate(gaps):  # 3 steps per epoch
        feed.batch(step, position, None, state=None)
        feed.after_step(position, step + 1, {dp.GAP_METRICS[0]: g_t, dp.GAP_METRICS[1]: g_s})
        position = source.advance(position)
    assert position.epoch == 1
    batch, metrics = feed.batch(3, position, None, state=None)
    assert len(generation) == 4 and metrics["curriculum_on"] == 1.0
    np.testing.assert_allclose(batch[dp.REFERENCE_GAP], [0.4] * 4 + [0.1] * 4, rtol=1e-6)
    feed.after_step(position, 4, {dp.GAP_METRICS[0]: 9.0, dp.GAP_METRICS[1]: 9.0})  # not the first epoch
    shares = [r for r in feed.ctx.writer.records if r[1] == "on_policy"]
    assert shares[0][0] == 3 and 0.0 <= shares[0][2]["generation_share"] <= 1.0
    state = json.loads(json.dumps(feed.state_dict()))
    assert state["reference_gap"] == pytest.approx([0.4, 0.1])


def test_a_non_positive_reference_gap_leaves_that_half_off(tmp_path, generation):
    feed = epoch_feed(tmp_path, restored={"reference_gap_sums": [0.6, -0.3], "reference_gap_steps": 3})
    batch, _ = feed.batch(3, DataPosition(1, 0), None, state=None)
    np.testing.assert_array_equal(batch[dp.CURRICULUM_ON], [1] * 4 + [0] * 4)


def test_resumed_epoch_reuses_the_stored_responses(tmp_path, generation):
    first = epoch_feed(tmp_path)
    before, _ = first.batch(0, DataPosition(0, 1), None, state=None)
    state = json.loads(json.dumps(first.state_dict()))
    generation.clear()
    resumed = epoch_feed(tmp_path, restored=state, resume_epoch=0)
    after, _ = resumed.batch(1, DataPosition(0, 1), None, state=None)
    assert generation == []  # read back from workdir/on_policy/epoch_0.npz
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    fresh = epoch_feed(tmp_path)  # a fresh run (no checkpoint) never trusts a stale file
    fresh.batch(0, DataPosition(0, 0), None, state=None)
    assert len(generation) == 2


def test_make_feed_passes_dataset_batches_through_for_offline_methods():
    from jdistill.methods.base import Method

    feed = on_policy.make_feed(Method("kd", loss=None), None, data=None, loaded=None, mesh=None, writer=None,
                               workdir="", student_graphdef=None, total_steps=1)
    batch = {"input_ids": np.zeros((2, 3))}
    assert feed.batch(0, DataPosition(), batch, None) == (batch, {})
    assert feed.state_dict() == {}
