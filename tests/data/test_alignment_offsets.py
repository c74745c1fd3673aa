"""Exact token alignment by character offsets on awkward text."""

import numpy as np
import pytest

from jdistill.data import alignment_offsets as eta
from tests.data import awkward_tokenizers

TEXTS = [
    "the café serves naïve crème brûlée",  # multi-byte characters, split by the byte-level BPE
    "emoji 🙂 in Tōkyō 東京",  # 4-byte and CJK characters
    " hello  world,\tthere!",  # leading, double and tab whitespace
    "1234 + 5678 = 6912",
    "x",
]


@pytest.fixture(scope="module")
def tokenizers():
    return {
        "byte_bpe": awkward_tokenizers.byte_bpe(),
        "metaspace": awkward_tokenizers.metaspace(),
        "wordpiece": awkward_tokenizers.wordpiece(),
    }


def _covered(offsets, group):
    return (min(offsets[k][0] for k in group), max(offsets[k][1] for k in group))


@pytest.mark.parametrize("pair", [("byte_bpe", "wordpiece"), ("metaspace", "byte_bpe"), ("wordpiece", "metaspace")])
@pytest.mark.parametrize("text", TEXTS)
def test_spans_partition_both_sides_and_cover_the_same_text(tokenizers, pair, text):
    s_tok, t_tok = (tokenizers[name] for name in pair)
    _, s_off = eta.response_offsets(s_tok, text)
    _, t_off = eta.response_offsets(t_tok, text)
    spans = eta.exact_spans(s_off, t_off)
    assert [k for s, _ in spans for k in s] == list(range(len(s_off)))
    assert [k for _, t in spans for k in t] == list(range(len(t_off)))
    for s_group, t_group in spans[:-1]:
        assert s_group and t_group
        # Both sides end the span at the same character (starts may differ by whitespace).
        assert _covered(s_off, s_group)[1] == _covered(t_off, t_group)[1]


def test_multibyte_pieces_stay_in_one_span(tokenizers):
    s_tok = tokenizers["byte_bpe"]
    ids, s_off = eta.response_offsets(s_tok, "東京")
    assert len(ids) > 2  # each CJK character is split into byte pieces
    _, t_off = eta.response_offsets(tokenizers["wordpiece"], "東京")
    spans = eta.exact_spans(s_off, t_off)
    for s_group, _ in spans:
        chars = {s_off[k] for k in s_group}
        # No character's pieces are spread over two spans.
        assert all(not (chars & {s_off[k] for k in other}) for other, _ in spans if other is not s_group)


def test_one_to_one_when_the_tokenizations_agree():
    offsets = [(0, 3), (4, 7), (7, 8)]
    assert eta.exact_spans(offsets, offsets) == [([0], [0]), ([1], [1]), ([2], [2])]


def test_merges_tokens_covering_the_same_text():
    student = [(0, 2), (2, 5), (6, 9)]  # "ab" "cde" " fgh"
    teacher = [(0, 5), (6, 7), (7, 9)]  # "abcde" " f" "gh"
    assert eta.exact_spans(student, teacher) == [([0, 1], [0]), ([2], [1, 2])]


def test_bos_on_one_side_only_is_not_aligned(tokenizers):
    # metaspace and wordpiece add a BOS with special tokens; byte_bpe does not. Responses are
    # aligned without special tokens, so the BOS never enters a span.
    ids, _ = eta.response_offsets(tokenizers["wordpiece"], "hello world")
    assert tokenizers["wordpiece"].bos_token_id not in ids
    out = eta.response_span_ids(tokenizers["byte_bpe"], tokenizers["wordpiece"], "hello world")
    assert out["student"][-1] == out["teacher"][-1] == out["num_spans"] - 1


def test_empty_response_is_only_the_eos_span(tokenizers):
    out = eta.response_span_ids(tokenizers["byte_bpe"], tokenizers["metaspace"], "")
    assert out["num_spans"] == 1
    assert list(out["student"]) == [0] and list(out["teacher"]) == [0]
    assert eta.exact_spans([], []) == []


def _tiny_pair(tmp_path):
    from tests.engine import tiny_setup

    texts = ["what is 7 plus 8 ? it is 15 ."]
    return tiny_setup.make_tokenizer(tmp_path / "a", texts), tiny_setup.make_tokenizer_b(tmp_path / "b", texts)


def _example(s_tok, t_tok, **kwargs):
    from jdistill.data import TextExample, tokenize_examples

    [example], _ = tokenize_examples(
        [TextExample("x", "what is 7 plus 8 ?", "it is 15 .")], s_tok, max_len=kwargs.pop("max_len", 32),
        max_prompt_len=8, teacher_tokenizer=t_tok, **kwargs,
    )
    return example


def test_eta_extras_by_hand(tmp_path):
    s_tok, t_tok = _tiny_pair(tmp_path)
    example = _example(s_tok, t_tok)
    # student: <s> what is 7 plus 8 ? | it is 15 . </s>   (prompt_len 7: positions 6..10 predict the response)
    # teacher:     what is 7 plus 8 ? | it is 1 5 . <eos> (prompt_len 6: positions 5..10)
    out = eta.eta_extras(example, s_tok, t_tok)
    n = len(example.student.ids)
    assert all(v.shape == (n,) for v in out.values())
    np.testing.assert_array_equal(out["eta_span"][6:11], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(out["eta_teacher_start"][6:11], [5, 6, 7, 9, 10])
    np.testing.assert_array_equal(out["eta_teacher_end"][6:11], [6, 7, 9, 10, 11])
    np.testing.assert_array_equal(out["eta_mask"], [0] * 6 + [1] * 5 + [0] * (n - 11))


def test_eta_extras_mask_spans_cut_by_truncation(tmp_path):
    s_tok, t_tok = _tiny_pair(tmp_path)
    # Student keeps "it is 15" (no EOS); the teacher keeps "it is 1": the "15" span is incomplete there.
    example = _example(s_tok, t_tok, max_len=10, teacher_max_len=9)
    assert list(example.student.ids[7:]) == s_tok("it is 15", add_special_tokens=False)["input_ids"]
    out = eta.eta_extras(example, s_tok, t_tok)
    np.testing.assert_array_equal(out["eta_mask"], [0] * 6 + [1, 1, 0, 0])  # 10 student tokens
    np.testing.assert_array_equal(out["eta_span"][6:9], [0, 1, 2])


def test_eta_extras_refuse_tokens_that_are_not_the_response(tmp_path):
    import dataclasses

    from jdistill.data import DataError

    s_tok, t_tok = _tiny_pair(tmp_path)
    example = dataclasses.replace(_example(s_tok, t_tok), response="it is 7 .")
    with pytest.raises(DataError, match="tokenized on its own"):
        eta.eta_extras(example, s_tok, t_tok)
