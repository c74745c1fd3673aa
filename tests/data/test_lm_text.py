"""Unlabelled text for the language-modelling term: documents, windows, step-keyed batches."""

import json

import numpy as np
import pytest

from jdistill.data import DataError
from jdistill.data.lm_text import LM_KEYS, LMWindows, read_documents
from tests.engine import tiny_setup


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    words = "a b c d e f g h".split()
    return tiny_setup.make_tokenizer(tmp_path_factory.mktemp("tok"), [" ".join(words)])


def test_documents_from_text_blocks_and_records(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\nstill first\n\n\nsecond doc\n\n  \n")
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [{"text": "third"}, {"text": " "}]))
    docs = read_documents(f"{tmp_path / 'a.txt'},{tmp_path / 'b.jsonl'}")
    assert docs == ["first doc\nstill first", "second doc", "third"]


def test_bad_lm_files_name_the_setting(tmp_path):
    with pytest.raises(DataError, match="data.lm_files: .* does not exist"):
        read_documents(str(tmp_path / "missing.txt"))
    (tmp_path / "c.jsonl").write_text(json.dumps({"prompt": "x"}) + "\n")
    with pytest.raises(DataError, match="no string 'text' field"):
        read_documents(str(tmp_path / "c.jsonl"))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no non-empty document"):
        read_documents(str(tmp_path / "empty.txt"))


def test_windows_cut_the_eos_separated_stream(tokenizer):
    vocab = tokenizer.get_vocab()
    eos = tokenizer.eos_token_id
    lm = LMWindows.from_documents(["a b c", "d e", "f g h a b"], tokenizer, max_len=3, batch_size=2, seed=0)
    stream = [vocab[w] for w in "a b c".split()] + [eos] + [vocab[w] for w in "d e".split()] + [eos] + \
        [vocab[w] for w in "f g h a b".split()] + [eos]
    assert len(stream) == 13 and lm.tokens_left_out == 1  # three windows of 4, one token left over
    np.testing.assert_array_equal(lm.windows, np.asarray(stream[:12]).reshape(3, 4))
    with pytest.raises(DataError, match="fewer than one window"):
        LMWindows.from_documents(["a"], tokenizer, max_len=8, batch_size=2, seed=0)


def test_batches_are_a_pure_function_of_the_step_and_cover_every_window(tokenizer):
    docs = [" ".join("abcdefgh"[(i + j) % 8] for j in range(5)) for i in range(20)]
    lm = LMWindows.from_documents(docs, tokenizer, max_len=5, batch_size=4, seed=3)
    n = len(lm.windows)
    assert n == 20  # 20 documents x 6 tokens = 120 tokens = 20 windows of 6
    seen = np.concatenate([lm.rows(step) for step in range(5)])  # exactly one epoch
    assert sorted(seen.tolist()) == list(range(n))
    again = LMWindows.from_documents(docs, tokenizer, max_len=5, batch_size=4, seed=3)
    np.testing.assert_array_equal(again.rows(7), lm.rows(7))  # resume: same rows for the same step
    other_seed = LMWindows.from_documents(docs, tokenizer, max_len=5, batch_size=4, seed=4)
    assert not np.array_equal(np.concatenate([other_seed.rows(s) for s in range(5)]), seen)
    batch = lm.batch(2)
    assert tuple(batch) == LM_KEYS
    w = lm.windows[lm.rows(2)]
    np.testing.assert_array_equal(batch["lm_input_ids"], w[:, :-1])
    np.testing.assert_array_equal(batch["lm_targets"], w[:, 1:])
    assert batch["lm_loss_mask"].shape == (4, 5) and batch["lm_loss_mask"].all()
