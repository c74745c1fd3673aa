"""MinED: edit-distance token alignment and the cached student→teacher vocabulary map."""

import numpy as np
import pytest

from jdistill.data import alignment_mined as mined
from tests.data import awkward_tokenizers


def reference_edit_distance(a, b):
    """Plain full-table Levenshtein."""
    table = np.zeros((len(a) + 1, len(b) + 1), int)
    table[:, 0] = range(len(a) + 1)
    table[0, :] = range(len(b) + 1)
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i, j] = min(table[i - 1, j] + 1, table[i, j - 1] + 1, table[i - 1, j - 1] + (a[i - 1] != b[j - 1]))
    return table[-1, -1]


@pytest.mark.parametrize("a,b", [("", ""), ("abc", ""), ("kitten", "sitting"), ("東京", "京都"), ("ab", "ba")])
def test_edit_distance(a, b):
    assert mined.edit_distance(a, b) == reference_edit_distance(a, b)


def test_normalize_whitespace_markers():
    assert mined.normalize_token("Ġhello") == mined.normalize_token("▁hello") == " hello"
    assert mined.normalize_token("##lo") == "lo"


def test_alignment_of_identical_and_split_tokens():
    assert mined.align_token_strings(["Ġa", "Ġb"], ["▁a", "▁b"]) == [(0, 0), (1, 1)]
    path = mined.align_token_strings(["Ġhello", "Ġworld"], ["▁hel", "lo", "▁world"])
    assert path[-1] == (1, 2)
    one = mined.one_to_one(path, 2)
    assert one[1] == 2 and one[0] == -1  # "hello" maps to two teacher pieces: not one-to-one


def test_empty_response_aligns_nothing():
    assert mined.align_token_strings([], ["a"]) == []
    np.testing.assert_array_equal(mined.one_to_one([], 0), np.zeros(0, np.int32))


def test_response_alignment_with_real_tokenizers():
    s_tok, t_tok = awkward_tokenizers.byte_bpe(), awkward_tokenizers.metaspace()
    text = " hello world, the café 東京"
    s_ids = s_tok(text, add_special_tokens=False)["input_ids"]
    t_ids = t_tok(text, add_special_tokens=False)["input_ids"]
    out = mined.response_alignment(s_tok, t_tok, s_ids, t_ids)
    assert out.shape == (len(s_ids),) and out.max() < len(t_ids)
    assert (out >= 0).sum() > 0
    mapped = [j for j in out if j >= 0]
    assert mapped == sorted(mapped)  # monotone


def test_vocab_map_prefers_exact_then_closest():
    s_tok, t_tok = awkward_tokenizers.byte_bpe(), awkward_tokenizers.metaspace()
    vocab_map = mined.compute_vocab_map(s_tok, t_tok)
    assert vocab_map.shape == (len(s_tok.get_vocab()),)
    t_strings = {i: mined.normalize_token(t) for t, i in t_tok.get_vocab().items()}
    for tok, s_id in list(s_tok.get_vocab().items())[:60]:
        norm = mined.normalize_token(tok)
        best = min(mined.edit_distance(norm, t) for t in t_strings.values())
        assert mined.edit_distance(norm, t_strings[int(vocab_map[s_id])]) == best


def test_vocab_map_is_cached_on_disk(tmp_path, monkeypatch):
    s_tok, t_tok = awkward_tokenizers.byte_bpe(), awkward_tokenizers.wordpiece()
    first = mined.cached_vocab_map(s_tok, t_tok, str(tmp_path))
    assert len(list(tmp_path.glob("mined_vocab_map_*.npy"))) == 1
    monkeypatch.setattr(mined, "compute_vocab_map", lambda *a: pytest.fail("recomputed"))
    np.testing.assert_array_equal(mined.cached_vocab_map(s_tok, t_tok, str(tmp_path)), first)
    assert mined.vocab_pair_key(s_tok, t_tok) != mined.vocab_pair_key(t_tok, s_tok)
