"""Sparse (offline top-k) KD on generated responses: records (text) and their top-k store round-trip through
the data pipeline, positions line up with the student's targets, the loss against numpy, and no teacher is
loaded for training. The teacher-forced store: tests/methods/test_offline_logits.py."""

import json

import jax
import numpy as np
import pytest

from jdistill import data as data_lib
from jdistill import models
from jdistill.data.prompts import Prompt
from jdistill.data import topk_store
from jdistill.data.records import DataError
from jdistill.engine import run_setup
from jdistill.engine.defaults import base_config
from jdistill.methods import DataContext, ModelView, make_method
from jdistill.sampling import Response, StopTokens
from jdistill.teacher_data.batches import TokenizedPrompt
from jdistill.teacher_data.records_out import response_record
from tests.engine import tiny_setup
from tests.losses import numpy_reference as ref
from tests import fake_models as views


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_setup.make_setup(tmp_path_factory.mktemp("sparse"), n_train=16, n_eval=8)


def _record(tokenizer, index, words, *, k, stop_with_eos=True, seed=0):
    """A record and its store rows exactly as jdistill.generate writes them, with random top-k rows."""
    ids = [tokenizer.convert_tokens_to_ids(w) for w in words]
    if stop_with_eos:
        ids.append(tokenizer.eos_token_id)
    rng = np.random.default_rng(seed + index)
    topk_ids = np.stack([rng.permutation(len(tokenizer))[:k] for _ in ids]).astype(np.int32)
    topk_logprobs = np.sort(np.log(rng.dirichlet(np.ones(k + 1)))[:k])[::-1] * np.ones((len(ids), 1))
    prompt = f"what is {index} plus 1 ?"
    item = TokenizedPrompt(Prompt(f"r{index}", prompt, prompt, False), tokenizer(prompt)["input_ids"])
    stop = StopTokens((tokenizer.eos_token_id,), tokenizer.pad_token_id)
    response = Response(np.asarray(ids, np.int32), stop.ended(ids), topk_ids, topk_logprobs.astype(np.float32))
    return item, response


def _write(tmp_path, tokenizer, answered, name="topk"):
    """The JSONL (text) and the store (ids and top-k) of generated responses, as jdistill.generate writes them."""
    path = tmp_path / f"{name}.jsonl"
    with topk_store.TopKWriter(topk_store.beside(str(path)), k=answered[0][1].topk_ids.shape[1],
                               vocab_size=len(tokenizer), tokenizer=topk_store.tokenizer_fingerprint(tokenizer),
                               source="generated") as writer:
        for item, response in answered:
            writer.add(item.prompt.id, sequence=item.ids + response.ids.tolist(),
                       spans=[(len(item.ids), len(item.ids) + len(response.ids))], ids=response.topk_ids,
                       logprobs=response.topk_logprobs, ended=response.ended)
    return tiny_setup.write_jsonl(path, [response_record(item, response, tokenizer) for item, response in answered])


def _examples(path, tokenizer, *, split="train", k=3, **tokenize):
    text, _ = data_lib.to_text_examples(data_lib.load_records(str(path)))
    examples, _ = data_lib.tokenize_examples(text, tokenizer, **tokenize)
    config = base_config("sparse_kd")
    config.data.max_len = tokenize["max_len"]
    method_config = _method_config()
    method_config.teacher_data.update(responses_file=str(path), num_topk_logprobs=k)
    method = make_method(method_config)
    context = DataContext(config, str(path.parent), tokenizer, None, split)
    return method.prepare_examples(examples, context)


def test_stored_records_round_trip_with_positions_on_the_targets(setup, tmp_path):
    tokenizer = setup["tokenizer"]
    answered = [
        _record(tokenizer, 0, ["it", "is", "1", "."], k=3),
        _record(tokenizer, 1, ["it", "is", "2"], k=3, stop_with_eos=False),  # stopped at the length limit
        _record(tokenizer, 2, ["it", "is", "3", ".", "it", "is", "3", "."], k=3),  # cut below
    ]
    path = _write(tmp_path, tokenizer, answered)
    assert all("teacher_topk" not in r and "response_ids" not in r for r in data_lib.load_records(str(path)))
    examples = _examples(path, tokenizer, max_len=13, max_prompt_len=8)
    assert len(examples) == 3
    batch = data_lib.collate(examples, buckets=(16,), pad_id=tokenizer.pad_token_id)
    assert batch["teacher_topk_ids"].shape == (3, 16, 3) and batch["teacher_topk_logprobs"].dtype == np.float32
    for row, (_, response) in enumerate(answered):
        positions = np.flatnonzero(batch["loss_mask"][row])
        n = len(positions)
        # Each trained position's target is the teacher's generated id, and its row is that id's top-k.
        np.testing.assert_array_equal(batch["targets"][row, positions], response.ids[:n])
        np.testing.assert_array_equal(batch["teacher_topk_ids"][row, positions], response.topk_ids[:n])
        np.testing.assert_allclose(batch["teacher_topk_logprobs"][row, positions], response.topk_logprobs[:n],
                                   rtol=2**-11)  # stored as float16
        off = np.ones(16, bool)
        off[positions] = False
        assert not batch["teacher_topk_ids"][row, off].any() and not batch["teacher_topk_logprobs"][row, off].any()
    assert batch["loss_mask"][0].sum() == 5  # 4 words + EOS
    assert batch["loss_mask"][1].sum() == 3  # no EOS appended: the teacher did not stop
    assert batch["loss_mask"][2].sum() == 13 - 7  # cut to max_len (prompt "<s> what is 2 plus 1 ?": 7 tokens)


def test_records_from_another_tokenizer_are_refused(setup, tmp_path):
    tokenizer = setup["tokenizer"]
    item, response = _record(tokenizer, 0, ["it", "is", "1", "."], k=2)
    other = Response(response.ids + 1, response.ended, response.topk_ids, response.topk_logprobs)  # "another" vocab
    path = _write(tmp_path, tokenizer, [(item, other)])
    records = data_lib.load_records(str(path))
    records[0]["response"] = "it is 1 ."
    tiny_setup.write_jsonl(path, records)
    with pytest.raises(DataError, match="decode to"):
        _examples(path, tokenizer, max_len=32, max_prompt_len=16, k=2)


def test_training_split_must_carry_targets_eval_may_not(setup, tmp_path):
    tokenizer = setup["tokenizer"]
    _write(tmp_path, tokenizer, [_record(tokenizer, 0, ["it", "is", "1", "."], k=3)])
    gold = data_lib.load_records(setup["eval"])  # other records; the first one shares the stored record's id
    plain = tiny_setup.write_jsonl(tmp_path / "topk.jsonl", gold)
    assert not _examples(plain, tokenizer, split="eval", max_len=32, max_prompt_len=16)[0].extras
    with pytest.raises(DataError, match="not the prompt the teacher answered"):
        _examples(plain, tokenizer, max_len=32, max_prompt_len=16)
    plain = tiny_setup.write_jsonl(tmp_path / "topk.jsonl", [{**r, "id": f"gold{i}"} for i, r in enumerate(gold)])
    with pytest.raises(DataError, match="num_topk_logprobs"):
        _examples(plain, tokenizer, max_len=32, max_prompt_len=16)


def _method_config(**overrides):
    c = base_config("sparse_kd").method
    c.kd_rate = 0.4
    for key, value in overrides.items():
        c[key] = value
    return c


def test_loss_matches_numpy_and_is_ce_alone_without_targets():
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(2, 4, 6)) * 2).astype(np.float32)
    teacher = (rng.normal(size=(2, 4, 6)) * 2).astype(np.float32)
    log_p = np.log(ref.softmax(teacher))
    ids = np.argsort(-log_p, -1)[..., :6].astype(np.int32)  # k = V: the sparse term is the dense forward KL
    batch = {"targets": rng.integers(0, 6, (2, 4)).astype(np.int32),
             "loss_mask": np.array([[0, 1, 1, 1], [0, 1, 1, 0]], np.float32),
             "teacher_topk_ids": ids, "teacher_topk_logprobs": np.take_along_axis(log_p, ids, -1).astype(np.float32)}
    method = make_method(_method_config())
    assert not method.needs_teacher
    view = ModelView(views.FakeOutput(logits, None), None)
    n = 6.0
    total, metrics = jax.jit(lambda b: method.loss({}, b, view, None, views.context(n)))(batch)
    ce = ref.token_mean(ref.cross_entropy(logits, batch["targets"]), batch["loss_mask"], n)
    kd = ref.token_mean(ref.forward_kl(logits, teacher), batch["loss_mask"], n)
    np.testing.assert_allclose([metrics["ce"], metrics["kd"], total], [ce, kd, 0.6 * ce + 0.4 * kd], rtol=1e-5)
    plain = {k: batch[k] for k in ("targets", "loss_mask")}
    total, metrics = jax.jit(lambda b: method.loss({}, b, view, None, views.context(n)))(plain)
    assert set(metrics) == {"ce"} and np.isclose(float(total), ce, rtol=1e-5)


def test_training_loads_no_teacher(setup):
    config = tiny_setup.tiny_config(setup, "sparse_kd")
    method = make_method(config.method)
    loaded = run_setup.load_models(config, method, models.make_mesh(-1, 1, 1))
    assert loaded.teacher is None and loaded.teacher_tokenizer is None


def test_missing_k_is_a_clear_error(setup, tmp_path):
    config = tiny_setup.tiny_config(setup, "sparse_kd")
    config.method.teacher_data.num_topk_logprobs = 0  # no k and no stored records
    with pytest.raises(ValueError, match="num_topk_logprobs"):
        make_method(config.method).prepare(config, str(tmp_path))
    json.dumps(config.to_dict())  # the config stays serialisable
