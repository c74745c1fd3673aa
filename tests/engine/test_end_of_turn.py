"""Regression: evaluation, on-policy sampling and teacher data stop at a chat checkpoint's end of turn.

The checkpoint (``tiny_setup.make_chat_setup``) lists ``[</s>, <eot>]`` in its
``generation_config.json`` while its tokenizer's EOS is ``</s>``, and its
decoder answers every prompt ``it <eot> plus plus ...``. A real decode: each
path must answer ``it <eot>`` and nothing after it. Stopping at the tokenizer's
EOS alone (what evaluation and on-policy sampling used to do) runs on to
``max_new_tokens``; each test shows that too, so it would catch the defect.

A spy on the service's ``generate`` call also records the stop ids the sampler
receives, which shows that every path goes through
:mod:`jdistill.sampling.responses`.
"""

import json
import os
import re
import types

import numpy as np
import pytest
from flax import nnx
from rouge_score import rouge_scorer

from jdistill import models, rollout, sampling, teacher_data
from jdistill.data import topk_store
from jdistill.data.batching import BatchSource, DataPosition
from jdistill.data.tokenize import TokenizedExample, TokenizedSide
from jdistill.engine import evaluation, trainer
from jdistill.methods import make_method
from jdistill.sampling import responses
from tests.engine import tiny_setup
from tests.teacher_data.conftest import read_jsonl, write_jsonl

NEW = 6  # max_new_tokens everywhere: the runaway answer fills them all


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    return tiny_setup.make_chat_setup(tmp_path_factory.mktemp("chat"))


@pytest.fixture(scope="module")
def chat_model(chat):
    return models.load_pretrained(chat["student"], dtype="float32")


@pytest.fixture
def sampler_stop_ids(monkeypatch):
    """The ``eos_ids`` of every ``generate`` call the generation service makes."""
    seen = []
    real = responses.generate

    def spy(model, ids, mask, **kwargs):
        seen.append(tuple(kwargs["eos_ids"]))
        return real(model, ids, mask, **kwargs)

    monkeypatch.setattr(responses, "generate", spy)
    return seen


def turn(chat) -> list[int]:
    return [chat["answer"], chat["end_of_turn_id"]]


def runaway(chat) -> list[int]:
    """What the bigram model says when only ``</s>`` stops it: NEW tokens."""
    return turn(chat) + [chat["after_turn_id"]] * (NEW - 2)


def tokenized(chat, records) -> list[TokenizedExample]:
    tokenizer, out = chat["tokenizer"], []
    for record in records:
        prompt = tokenizer(record["prompt"])["input_ids"]
        response = tokenizer(record["response"], add_special_tokens=False)["input_ids"] + [chat["eos_id"]]
        ids = np.asarray(prompt + response, np.int32)
        out.append(TokenizedExample(record["id"], TokenizedSide(ids, len(prompt)), response=record["response"]))
    return out


def test_the_checkpoint_defines_an_end_of_turn_apart_from_eos(chat, chat_model):
    stop = sampling.stop_tokens(chat["tokenizer"], chat["student"], chat_model.config)
    assert stop.eos_ids == (chat["eos_id"], chat["end_of_turn_id"])
    assert stop.pad_id == chat["tokenizer"].pad_token_id
    assert sampling.stop_tokens(chat["tokenizer"], None, chat_model.config).eos_ids == (chat["eos_id"],)


def test_evaluation_responses_stop_at_the_end_of_turn(chat, chat_model, sampler_stop_ids):
    config = tiny_setup.tiny_config(chat, **{"eval.max_new_tokens": NEW}).eval
    examples = tokenized(chat, tiny_setup.arithmetic_records(8, seed=1))
    metrics = evaluation.generation_metrics(
        chat_model, examples, tokenizer=chat["tokenizer"], config=config, batch_size=8, seed=0,
        checkpoint_dir=chat["student"],
    )
    assert [s["prediction"] for s in metrics["samples"]] == ["it"] * 5
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    per_example = [100 * scorer.score(e.response, "it")["rougeL"].fmeasure for e in examples]
    assert metrics["rougeL"] == pytest.approx(np.mean(per_example)) and metrics["exact_match"] == 0.0
    assert metrics["rougeL_per_example"] == pytest.approx(per_example)
    assert sampler_stop_ids == [(chat["eos_id"], chat["end_of_turn_id"])]

    # The defect: stopping at the tokenizer's EOS alone runs past the end of the turn.
    texts = evaluation.response_texts(
        chat_model, [e.student.ids[: e.student.prompt_len] for e in examples], tokenizer=chat["tokenizer"],
        settings=evaluation.eval_settings(config), stop=sampling.StopTokens((chat["eos_id"],), 0),
        batch_size=8, key=None,
    )
    assert texts == [chat["tokenizer"].decode(runaway(chat))] * 8 == ["it <eot> plus plus plus plus"] * 8


class Writer:
    def write(self, step, metrics, *, split):
        del step, metrics, split


def on_policy_batch(chat, chat_model, tmp_path, **method):
    """A GKD feed built as the trainer builds it (config paths -> stop tokens); its first step's batch."""
    overrides = {f"method.{k}": v for k, v in method.items()}
    config = tiny_setup.tiny_config(chat, "gkd", **{"method.divergence": "generalized_jsd",
                                                    "method.sampling.max_new_tokens": NEW, **overrides})
    tokenizer = chat["tokenizer"]
    source = BatchSource(tokenized(chat, tiny_setup.arithmetic_records(16)), batch_size=8, seed=0, buckets=(32,),
                         pad_id=tokenizer.pad_token_id)
    data = types.SimpleNamespace(train=source, collate_kwargs=dict(buckets=(32,), pad_id=tokenizer.pad_token_id))
    loaded = types.SimpleNamespace(student=chat_model, teacher=chat_model, student_tokenizer=tokenizer,
                                   teacher_tokenizer=None)
    graphdef, params = nnx.split(chat_model)
    feed = trainer.make_feed(
        config, make_method(config.method), loaded, data, models.make_mesh(-1, 1, 1), Writer(), str(tmp_path),
        graphdef, 2, restored=None, resume_position=None,
    )
    state = types.SimpleNamespace(trainable={"student": params})
    return feed.batch(0, DataPosition(), source.batch_at(DataPosition()), state)


@pytest.mark.parametrize("method,source", [
    ({"student_probability": 1.0}, rollout.STUDENT_SAMPLES),
    ({"student_probability": 0.0, "seq_kd": True}, rollout.TEACHER_SAMPLES),
])
def test_on_policy_rows_stop_at_the_end_of_turn(chat, chat_model, sampler_stop_ids, tmp_path, method, source):
    batch, metrics = on_policy_batch(chat, chat_model, tmp_path, **method)
    assert metrics["data_source"] == source
    for targets, loss_mask in zip(batch["targets"], batch["loss_mask"]):
        assert targets[loss_mask > 0].tolist() == turn(chat)  # the trained response: up to <eot>, no further
    assert sampler_stop_ids == [(chat["eos_id"], chat["end_of_turn_id"])]


def test_teacher_data_stops_at_the_end_of_turn(chat, tmp_path, sampler_stop_ids):
    from configs.generate import get_config

    prompts = write_jsonl(tmp_path / "prompts.jsonl", tiny_setup.arithmetic_records(8, seed=2))

    def run(output, **generation):
        config = get_config()
        config.teacher.path = chat["teacher"]
        config.teacher.param_dtype = config.teacher.compute_dtype = "float32"
        config.data.prompt_files = prompts
        config.output.path = str(tmp_path / output)
        config.generation.update(batch_size=8, max_new_tokens=NEW, num_topk_logprobs=2, **generation)
        teacher_data.run(config)
        return read_jsonl(tmp_path / output)

    def generated_ids(name, record):
        store = topk_store.TopKStore(str(tmp_path / name))
        return store.rows(store.entry(record["id"]))[0].tolist()

    records = run("turn.jsonl")
    assert len(records) == 8
    assert all(r["response"] == "it" and r["stop"] == "eos" and generated_ids("turn.topk", r) == turn(chat)
               for r in records)
    assert sampler_stop_ids == [(chat["eos_id"], chat["end_of_turn_id"])]
    # generation.eos_ids overrides the policy: with the tokenizer's EOS alone the answer runs on.
    records = run("eos_only.jsonl", eos_ids=str(chat["eos_id"]))
    assert all(generated_ids("eos_only.topk", r) == runaway(chat) and r["stop"] == "length" for r in records)


@pytest.mark.slow
def test_a_training_run_evaluates_and_samples_up_to_the_end_of_turn(chat, tmp_path, sampler_stop_ids):
    """The trainer hands ``student.path`` / ``teacher.path`` to evaluation and the on-policy feed."""
    config = tiny_setup.tiny_config(chat, "gkd", **{
        "method.divergence": "generalized_jsd", "method.student_probability": 1.0, "train.steps": 1,
        "train.batch_size": 8, "train.export_hf": False, "method.sampling.max_new_tokens": NEW, "eval.max_new_tokens": NEW,
        "data.buckets": "32", "logging.every": 1,
    })
    workdir = str(tmp_path)
    trainer.run(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        train = [r for r in map(json.loads, f) if r["split"] == "train"]
    assert train[0]["data_source"] == rollout.STUDENT_SAMPLES
    assert train[0]["response_tokens"] == 8 * len(turn(chat))  # 8 rows of "it <eot>"
    with open(os.path.join(workdir, "report.md")) as f:
        predictions = re.findall(r"\*\*Prediction\*\*: (.*)", f.read())
    assert predictions == ["'it'"] * 5
    assert set(sampler_stop_ids) == {(chat["eos_id"], chat["end_of_turn_id"])} and len(sampler_stop_ids) >= 2
