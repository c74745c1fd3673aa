"""Offline teacher logits: stage 1 stores the teacher's teacher-forced top-k, stage 2 trains without the teacher.

* the loss from the store equals the online sparse-KD loss on the same batch (the teacher's top-k computed
  from its logits here, and a float64 numpy transcription of the loss), on prompt/response and on multi-turn
  chat data (every assistant turn);
* float16 log-probs move the loss by ~1e-4 relative; float32 ones by float32 rounding only;
* a two-stage run: the ``jdistill.teacher_logits`` command, then training that never loads the teacher and
  logs, at its first step, the online loss of its first batch.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jdistill import models
from jdistill.data import topk_store
from jdistill.data.batching import DataPosition
from jdistill.engine import run_setup, trainer
from jdistill.methods import ModelView, make_method, method_settings, sparse_kd
from tests import fake_models as views
from tests.data.test_chat import MARKERS, TEMPLATE
from tests.engine import tiny_setup

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K = 4
KD_RATE = 0.5


def chat_records(n, seed):
    """Two-turn arithmetic conversations."""
    records = tiny_setup.arithmetic_records(2 * n, seed=seed)
    return [{"id": f"c{i}", "messages": [
        {"role": "user", "content": a["prompt"]}, {"role": "assistant", "content": a["response"]},
        {"role": "user", "content": b["prompt"]}, {"role": "assistant", "content": b["response"]},
    ]} for i, (a, b) in enumerate(zip(records[::2], records[1::2]))]


def make_chat_setup(root):
    train, evals = chat_records(16, 0), chat_records(8, 1)
    texts = [m["content"] for r in train + evals for m in r["messages"]]
    tokenizer = tiny_setup.make_tokenizer(root / "tok", texts, extra_words=[str(i) for i in range(19)] + MARKERS)
    tokenizer.chat_template = TEMPLATE
    return {
        "teacher": str(tiny_setup.make_model_dir(root / "teacher", tokenizer, hidden=48, seed=1)),
        "student": str(tiny_setup.make_model_dir(root / "student", tokenizer, hidden=32, seed=2)),
        "train": str(tiny_setup.write_jsonl(root / "train.jsonl", train)),
        "eval": str(tiny_setup.write_jsonl(root / "eval.jsonl", evals)),
        "tokenizer": tokenizer,
    }


@pytest.fixture(scope="module", params=["prompt_response", "chat"])
def case(request, tmp_path_factory):
    """A set-up and its stores, written once (stage 1): float16 and float32 log-probs."""
    root = tmp_path_factory.mktemp(request.param)
    setup = (tiny_setup.make_setup(root, n_train=16, n_eval=8) if request.param == "prompt_response"
             else make_chat_setup(root))
    config = offline_config(setup)
    if request.param == "chat":
        config.data.max_len, config.data.max_prompt_len, config.data.buckets = 48, 40, "48"
    summaries = {}
    for dtype in ("float16", "float32"):
        teacher_data = method_settings(config.method).teacher_data
        settings = type(teacher_data)(**{**vars(teacher_data), "logprobs_dtype": dtype,
                                         "logits_dir": str(root / dtype), "shard_tokens": 40})
        summaries[dtype] = sparse_kd.write_teacher_logits(config, str(root), settings)
    return {"name": request.param, "setup": setup, "config": config, "root": root, "summaries": summaries}


def offline_config(setup, **overrides):
    config = tiny_setup.tiny_config(setup, "sparse_kd", **{
        "method.teacher_data.source": "dataset", "method.teacher_data.num_topk_logprobs": K,
        "method.teacher_data.batch_size": 8, "method.kd_rate": KD_RATE, "eval.generate": False,
        "train.export_hf": False, **overrides})
    return config


def stage2_batch(case, store):
    """Stage 2's set-up with no teacher given: the method, the student and the first training batch."""
    config = case["config"].copy_and_resolve_references()
    config.teacher.path = ""
    config.method.teacher_data.logits_dir = str(store)
    tokenizer = run_setup.load_student_tokenizer(config)
    method = make_method(config.method, run_setup.model_facts(config, tokenizer))
    assert method.prepare(config, str(case["root"])) is None
    loaded = run_setup.load_models(config, method, models.make_mesh(-1, 1, 1), tokenizer)
    assert loaded.teacher is None
    data = run_setup.build_data(config, method, loaded, str(case["root"]))
    return method, loaded, data.train.batch_at(DataPosition())


def online_topk(setup, batch, vocab):
    """The teacher's top-k on this batch, from its logits: float64 log-softmax over the tokenizer's rows."""
    teacher = models.load_pretrained(setup["teacher"], dtype="float32")
    logits = np.asarray(teacher(batch["input_ids"], batch["attention_mask"]).logits, np.float64)[..., :vocab]
    shifted = logits - logits.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    ids = np.argsort(-log_p, axis=-1, kind="stable")[..., :K]
    return ids.astype(np.int32), np.take_along_axis(log_p, ids, -1)


def numpy_loss(student_logits, batch, ids, log_p, kd_rate):
    """(1 - kd_rate) CE + kd_rate * sum_t M_t [sum_k p log(p / q) + p_rest log(p_rest / q_rest)] / N, in float64."""
    z = np.asarray(student_logits, np.float64)
    log_q = z - z.max(-1, keepdims=True)
    log_q = log_q - np.log(np.exp(log_q).sum(-1, keepdims=True))
    mask = batch["loss_mask"].astype(np.float64)
    n = mask.sum()
    ce = -(np.take_along_axis(log_q, batch["targets"][..., None], -1)[..., 0] * mask).sum() / n
    p = np.exp(log_p)
    log_q_k = np.take_along_axis(log_q, ids, -1)
    p_rest = np.clip(1 - p.sum(-1), 0, 1)
    q_rest = 1 - np.exp(log_q_k).sum(-1)
    kd_t = (p * (log_p - log_q_k)).sum(-1) + np.where(p_rest > 0, p_rest * (np.log(np.maximum(p_rest, 1e-300))
                                                                             - np.log(q_rest)), 0.0)
    kd = (kd_t * mask).sum() / n
    return (1 - kd_rate) * ce + kd_rate * kd, ce, kd


def method_loss(method, loaded, batch):
    output = loaded.student(batch["input_ids"], batch["attention_mask"])
    n = float(batch["loss_mask"].sum())
    total, metrics = method.loss({}, batch, ModelView(output, loaded.student), None, views.context(n))
    return float(total), {k: float(v) for k, v in metrics.items()}, np.asarray(output.logits)


def test_the_stored_loss_is_the_online_sparse_kd_loss_on_the_same_batch(case):
    tokenizer = case["setup"]["tokenizer"]
    results = {}
    for dtype in ("float16", "float32"):
        method, loaded, batch = stage2_batch(case, case["root"] / dtype)
        mask = batch["loss_mask"] > 0
        ids, log_p = online_topk(case["setup"], batch, len(tokenizer))
        # The stored rows are the teacher's top-k at exactly the trained positions (ids exact, log-probs rounded).
        np.testing.assert_array_equal(batch["teacher_topk_ids"][mask], ids[mask])
        np.testing.assert_allclose(batch["teacher_topk_logprobs"][mask], log_p[mask],
                                   rtol=2**-11 if dtype == "float16" else 1e-5, atol=1e-6)
        stored, stored_metrics, logits = method_loss(method, loaded, batch)
        online_batch = {**batch, "teacher_topk_ids": np.where(mask[..., None], ids, 0),
                        "teacher_topk_logprobs": np.where(mask[..., None], log_p, 0).astype(np.float32)}
        online, online_metrics, _ = method_loss(method, loaded, online_batch)
        reference, _, reference_kd = numpy_loss(logits, batch, ids, log_p, KD_RATE)
        results[dtype] = (stored, online, reference)
        print(f"{case['name']} {dtype}: stored {stored:.8f} online {online:.8f} numpy {reference:.8f} "
              f"kd stored {stored_metrics['kd']:.8f} online {online_metrics['kd']:.8f} numpy {reference_kd:.8f} "
              f"rel diff {abs(stored - online) / online:.2e}")
        np.testing.assert_allclose(online, reference, rtol=2e-6)  # JAX on the online top-k = float64 numpy
        np.testing.assert_allclose(stored, online, rtol=1e-3 if dtype == "float16" else 2e-6)
    if case["name"] == "chat":  # every assistant turn is trained: two runs of the mask per row
        runs = [np.flatnonzero(np.diff(np.r_[0, row, 0]) == 1).size for row in batch["loss_mask"] > 0]
        assert set(runs) == {2}
    summary = case["summaries"]["float16"]
    assert summary.written == 16 and summary.already_done == 0
    assert summary.bytes_per_token and summary.bytes_per_token > 0


def test_a_rerun_writes_nothing_and_loads_no_teacher(case, monkeypatch):
    loaded_paths = []
    original = models.load_pretrained
    monkeypatch.setattr(models, "load_pretrained", lambda path, **kw: loaded_paths.append(path) or original(path, **kw))
    teacher_data = method_settings(case["config"].method).teacher_data
    settings = type(teacher_data)(**{**vars(teacher_data), "logits_dir": str(case["root"] / "float16")})
    summary = sparse_kd.write_teacher_logits(case["config"], str(case["root"]), settings)
    assert summary.written == 0 and summary.already_done == 16 and loaded_paths == []


@pytest.mark.slow
def test_two_stage_run(tmp_path, monkeypatch):
    """Stage 1: the command. Stage 2: training loads the student only and logs the online loss at step 1."""
    setup = tiny_setup.make_setup(tmp_path / "setup", n_train=16, n_eval=8)
    config_file = tmp_path / "offline_config.py"
    config_file.write_text(
        "from tests.engine import tiny_setup\n"
        "from tests.methods.test_offline_logits import offline_config\n"
        f"SETUP = {{'teacher': {setup['teacher']!r}, 'student': {setup['student']!r}, 'train': {setup['train']!r}, "
        f"'eval': {setup['eval']!r}}}\n"
        "def get_config():\n"
        "    return offline_config(SETUP)\n"
    )
    workdir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-m", "jdistill.teacher_logits", f"--config={config_file}",
                          f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "bytes per token" in out.stdout
    store = topk_store.TopKStore(str(workdir / "teacher_logits"))
    assert len(store) == 16 and store.source == "teacher_forced" and store.k == K

    loaded_paths = []
    original = models.load_pretrained
    monkeypatch.setattr(models, "load_pretrained", lambda path, **kw: loaded_paths.append(path) or original(path, **kw))
    config = offline_config(setup, **{"train.steps": 2, "logging.every": 1})  # teacher.path still given
    result = trainer.run(config, str(workdir))
    assert loaded_paths == [setup["student"]]  # the teacher is never loaded
    with open(workdir / "metrics.jsonl") as f:
        train = [r for r in map(json.loads, f) if r["split"] == "train"]
    assert result.steps == 2 and all(np.isfinite(r["kd"]) and r["kd"] > 0 for r in train)

    # Step 1's logged loss is the online sparse-KD loss of the first batch at the initial student.
    monkeypatch.setattr(models, "load_pretrained", original)
    case = {"config": config, "root": workdir, "setup": setup}
    method, loaded, batch = stage2_batch(case, workdir / "teacher_logits")
    ids, log_p = online_topk(setup, batch, len(setup["tokenizer"]))
    mask = batch["loss_mask"] > 0
    online_batch = {**batch, "teacher_topk_ids": np.where(mask[..., None], ids, 0),
                    "teacher_topk_logprobs": np.where(mask[..., None], log_p, 0).astype(np.float32)}
    online, _, _ = method_loss(method, loaded, online_batch)
    print(f"two-stage: logged step-1 loss {train[0]['loss']:.8f}, online {online:.8f}")
    np.testing.assert_allclose(train[0]["loss"], online, rtol=1e-3)
    jax.clear_caches()
