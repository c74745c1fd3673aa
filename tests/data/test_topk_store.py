"""The top-k store: round trip, dtypes, no pickle, resuming after a crash, and the checks training relies on."""

import json
import os

import numpy as np
import pytest

from jdistill import data
from jdistill.data import topk_store
from jdistill.data.records import DataError
from tests.engine import tiny_setup


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_setup.make_tokenizer(tmp_path_factory.mktemp("tok"), ["what is 1 plus 2 ? it is 3 ."])


def rows(n, k, vocab, seed):
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.permutation(vocab)[:k] for _ in range(n)]).astype(np.int32)
    logprobs = np.sort(np.log(rng.dirichlet(np.ones(k + 1), size=n))[:, :k], axis=1)[:, ::-1].astype(np.float32)
    return ids, logprobs


def writer(directory, vocab=40, k=3, **kwargs):
    return topk_store.TopKWriter(str(directory), k=k, vocab_size=vocab, tokenizer="fp", source="teacher_forced",
                                 **kwargs)


def test_round_trip_with_spans_dtypes_and_bytes_per_token(tmp_path):
    store_dir = tmp_path / "store"
    sequences = {"a": ([1, 5, 6, 7, 8], ((2, 5),)), "b": ([1, 4, 9, 9, 2, 3, 7, 2], ((2, 4), (6, 8)))}
    expected = {}
    with writer(store_dir, shard_tokens=3) as w:  # a shard per example here
        for seed, (name, (sequence, spans)) in enumerate(sequences.items()):
            ids, logprobs = rows(sum(b - a for a, b in spans), 3, 40, seed)
            w.add(name, sequence=sequence, spans=spans, ids=ids, logprobs=logprobs)
            expected[name] = (ids, logprobs)
    store = topk_store.TopKStore(str(store_dir))
    assert len(store) == 2 and store.k == 3 and store.ids() == {"a", "b"}
    manifest = json.loads((store_dir / "manifest.json").read_text())
    assert manifest["ids_dtype"] == "uint16" and manifest["logprobs_dtype"] == "float16"
    assert manifest["examples"] == 2 and manifest["tokens"] == 7 and manifest["shards"] == 2
    assert manifest["bytes_per_token_arrays"] == 4 * 2 + 3 * 2  # (k + 1) uint16 ids + k float16 log-probs
    assert manifest["bytes_per_token"] > manifest["bytes_per_token_arrays"]  # headers and indexes included
    for name, (sequence, spans) in sequences.items():
        entry = store.entry(name)
        targets, ids, logprobs = store.rows(entry)
        assert entry.spans == spans and entry.sequence_hash == topk_store.token_hash(sequence)
        assert targets.tolist() == [t for a, b in spans for t in sequence[a:b]]
        np.testing.assert_array_equal(ids, expected[name][0])
        np.testing.assert_allclose(logprobs, expected[name][1], rtol=2**-11)  # float16 rounding
        assert isinstance(ids, np.memmap)
    for path in store_dir.glob("*.npy"):  # plain arrays, readable without pickle
        np.load(path, allow_pickle=False)
    assert topk_store.ids_dtype(1 << 16) == "uint16" and topk_store.ids_dtype((1 << 16) + 1) == "int32"


def test_a_restart_discards_the_unfinished_shard_and_skips_finished_examples(tmp_path):
    store_dir = tmp_path / "store"
    w = writer(store_dir, shard_tokens=100)
    ids, logprobs = rows(2, 3, 40, 0)
    w.add("a", sequence=[1, 2, 3], spans=((1, 3),), ids=ids, logprobs=logprobs)
    w.commit()
    w.add("b", sequence=[1, 2, 3], spans=((1, 3),), ids=ids, logprobs=logprobs)
    # A crash while shard 1 was being written: its arrays are there, its index (the completion mark) is not.
    np.save(store_dir / "shard-00001.ids.npy", ids)
    (store_dir / "shard-00001.targets.npy.tmp").write_bytes(b"partial")
    del w
    again = writer(store_dir, shard_tokens=100)
    assert again.done_ids == {"a"}
    assert sorted(again.discarded) == ["shard-00001.ids.npy", "shard-00001.targets.npy.tmp"]
    with pytest.raises(DataError, match="already in the top-k store"):
        again.add("a", sequence=[1, 2, 3], spans=((1, 3),), ids=ids, logprobs=logprobs)
    again.add("b", sequence=[1, 2, 3], spans=((1, 3),), ids=ids, logprobs=logprobs)
    again.close()
    assert topk_store.TopKStore(str(store_dir)).ids() == {"a", "b"}
    # keep_ids: a caller whose own records lag the store drops the shards it has not recorded.
    pruned = writer(store_dir, keep_ids={"a"})
    assert pruned.done_ids == {"a"} and "shard-00001.index.json" in pruned.discarded
    with pytest.raises(DataError, match="written with k = 3"):
        writer(store_dir, k=4)


def test_bad_rows_are_refused(tmp_path):
    w = writer(tmp_path / "s", vocab=10)
    ids, logprobs = rows(2, 3, 10, 0)
    with pytest.raises(DataError, match="outside the 10 rows"):
        w.add("a", sequence=[1, 2, 30], spans=((1, 3),), ids=ids, logprobs=logprobs)
    with pytest.raises(DataError, match="<= 0"):
        w.add("a", sequence=[1, 2, 3], spans=((1, 3),), ids=ids, logprobs=-logprobs)
    with pytest.raises(ValueError, match="must be"):
        w.add("a", sequence=[1, 2, 3], spans=((1, 2),), ids=ids, logprobs=logprobs)


def _tokenized(tokenizer, records, **kwargs):
    text, _ = data.to_text_examples(records)
    examples, _ = data.tokenize_examples(text, tokenizer, max_len=kwargs.get("max_len", 32), max_prompt_len=8)
    return examples


def test_teacher_forced_rows_attach_only_to_the_same_tokenization(tokenizer, tmp_path):
    records = [{"id": "x", "prompt": "what is 1 plus 2 ?", "response": "it is 3 ."}]
    (example,) = _tokenized(tokenizer, records)
    side = example.student
    spans = side.trained_spans
    n = spans[0][1] - spans[0][0]
    ids, logprobs = rows(n, 3, len(tokenizer), 1)
    with topk_store.TopKWriter(str(tmp_path / "s"), k=3, vocab_size=len(tokenizer), source="teacher_forced",
                               tokenizer=topk_store.tokenizer_fingerprint(tokenizer)) as w:
        w.add("x", sequence=side.ids, spans=spans, ids=ids, logprobs=logprobs)
    store = topk_store.TopKStore(str(tmp_path / "s"))
    topk_store.check_store(store, tokenizer, k=3)
    with pytest.raises(DataError, match="top-3 rows, the config asks for top-4"):
        topk_store.check_store(store, tokenizer, k=4)
    attached, _ = topk_store.with_stored_topk(example, store, tokenizer=tokenizer, max_len=32)
    batch = data.collate([attached], buckets=(16,), pad_id=0)
    positions = np.flatnonzero(batch["loss_mask"][0])
    np.testing.assert_array_equal(batch["teacher_topk_ids"][0, positions], ids)
    np.testing.assert_allclose(batch["teacher_topk_logprobs"][0, positions], logprobs, rtol=2**-11)
    assert batch["teacher_topk_logprobs"].dtype == np.float32
    off = np.setdiff1d(np.arange(16), positions)
    assert not batch["teacher_topk_ids"][0, off].any()
    # Another max_len cuts the response: the stored rows no longer describe this tokenization.
    (short,) = _tokenized(tokenizer, records, max_len=10)
    with pytest.raises(DataError, match="tokenized differently"):
        topk_store.with_stored_topk(short, store, tokenizer=tokenizer, max_len=10)


def test_generated_rows_replace_the_response_and_check_prompt_and_text(tokenizer, tmp_path):
    prompt = tokenizer("what is 1 plus 2 ?")["input_ids"]
    generated = tokenizer("it is 3", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids, logprobs = rows(len(generated), 2, len(tokenizer), 2)
    with topk_store.TopKWriter(str(tmp_path / "g"), k=2, vocab_size=len(tokenizer), source="generated",
                               tokenizer=topk_store.tokenizer_fingerprint(tokenizer)) as w:
        w.add("x", sequence=prompt + generated, spans=((len(prompt), len(prompt) + len(generated)),), ids=ids,
              logprobs=logprobs, ended=True)
    store = topk_store.TopKStore(str(tmp_path / "g"))
    (example,) = _tokenized(tokenizer, [{"id": "x", "prompt": "what is 1 plus 2 ?", "response": "it is 3"}])
    attached, _ = topk_store.with_stored_topk(example, store, tokenizer=tokenizer, max_len=32)
    assert attached.student.ids.tolist() == prompt + generated
    cut, _ = topk_store.with_stored_topk(example, store, tokenizer=tokenizer, max_len=len(prompt) + 2)
    assert cut.student.ids.tolist() == prompt + generated[:2]
    assert topk_store.with_stored_topk(example, store, tokenizer=tokenizer, max_len=len(prompt) + 2,
                                       policy="drop") == (None, "stored response too long (truncation=drop)")
    (other_text,) = _tokenized(tokenizer, [{"id": "x", "prompt": "what is 1 plus 2 ?", "response": "it is 2"}])
    with pytest.raises(DataError, match="decode to 'it is 3'"):
        topk_store.with_stored_topk(other_text, store, tokenizer=tokenizer, max_len=32)
    (other_prompt,) = _tokenized(tokenizer, [{"id": "x", "prompt": "what is 2 plus 2 ?", "response": "it is 3"}])
    with pytest.raises(DataError, match="not the prompt the teacher answered"):
        topk_store.with_stored_topk(other_prompt, store, tokenizer=tokenizer, max_len=32)


def test_not_a_store(tmp_path):
    with pytest.raises(DataError, match="not a teacher top-k store"):
        topk_store.TopKStore(str(tmp_path))
    assert topk_store.beside(os.path.join("d", "teacher.jsonl")) == os.path.join("d", "teacher.topk")


class _Vocabulary:
    """The two things the store checks of a tokenizer."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def get_vocab(self):
        return {f"w{i}": i for i in range(self.n)}


def test_ids_of_padded_head_rows_are_refused_for_training(tmp_path):
    vocab = _Vocabulary(10)
    fingerprint = topk_store.tokenizer_fingerprint(vocab)
    with topk_store.TopKWriter(str(tmp_path / "s"), k=2, vocab_size=10, id_limit=16, tokenizer=fingerprint,
                               source="generated") as w:  # generation's top-k runs over a 16-row LM head
        w.add("a", sequence=[1, 2, 3], spans=((1, 3),), ids=np.array([[3, 12], [4, 5]]),
              logprobs=np.log([[0.5, 0.1], [0.5, 0.1]]))
    store = topk_store.TopKStore(str(tmp_path / "s"))
    assert store.max_id == 12
    with pytest.raises(DataError, match="ids up to 12, beyond the student's 10 tokens"):
        topk_store.check_store(store, vocab)
    with pytest.raises(DataError, match="another tokenizer"):
        topk_store.check_store(store, _Vocabulary(13))
