"""MinED: edit-distance token alignment, the cached vocabulary map, and the per-position arrays."""

import numpy as np
import pytest

from jdistill.data import TextExample, alignment_mined as mined, alignment_vocab, tokenize_examples
from tests.data import awkward_tokenizers
from tests.engine import tiny_setup


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
    assert mined.normalize_token("Ġhello") == mined.normalize_token("▁hello") == "hello"  # DSKD deletes them
    assert mined.normalize_token("Ġhello", "space") == mined.normalize_token("▁hello", "space") == " hello"
    assert mined.normalize_token("##lo") == mined.normalize_token("##lo", "space") == "lo"
    with pytest.raises(ValueError, match="markers must be one of"):
        mined.normalize_token("a", "keep")


def test_deleted_markers_make_a_wordpiece_word_free():
    """A word-initial WordPiece token has no marker: with deleted markers "Ġthe" costs 0 against "the"."""
    assert mined.align_token_strings(["Ġthe", "Ġcat"], ["the", "cat"]) == [(0, 0), (1, 1)]
    cost = mined._cost_matrix(["Ġthe"], ["the"], "delete"), mined._cost_matrix(["Ġthe"], ["the"], "space")
    assert cost[0][0, 0] == 0 and cost[1][0, 0] == 1


def dskd_one_to_one(student_tokens, teacher_tokens):
    """DSKD's MinED alignment, transcribed: ``dtw`` with the teacher as series_1 and each side's own marker
    removed (min_edit_dis_kld.py lines 163-178 and 367-410), then its one-to-one rule."""
    t = [x.replace("▁", "") for x in teacher_tokens]  # a SentencePiece teacher
    s = [x.replace("Ġ", "") for x in student_tokens]  # a byte-level BPE student
    matrix = np.zeros((len(t) + 1, len(s) + 1))
    matrix[0, :] = np.inf
    matrix[:, 0] = np.inf
    matrix[0, 0] = 0
    for i, a in enumerate(t):
        for j, b in enumerate(s):
            matrix[i + 1, j + 1] = reference_edit_distance(a, b) + min(
                matrix[i, j + 1], matrix[i + 1, j], matrix[i, j])
    matrix = matrix[1:, 1:]
    i, j = matrix.shape[0] - 1, matrix.shape[1] - 1
    student_to_teacher = [[] for _ in s]
    while i > 0 or j > 0:
        student_to_teacher[j].append(i)
        diag = matrix[i - 1, j - 1] if i > 0 and j > 0 else np.inf
        up = matrix[i - 1, j] if i > 0 else np.inf
        left = matrix[i, j - 1] if j > 0 else np.inf
        move = np.argmin([diag, up, left])
        if move == 0:
            i, j = i - 1, j - 1
        elif move == 1:
            i -= 1
        else:
            j -= 1
    student_to_teacher[0].append(0)
    return [a[0] if len(a) == 1 else -1 for a in student_to_teacher]


def test_alignment_matches_a_transcription_of_dskd():
    """Random short sequences over a tiny alphabet, so that equally cheap paths (ties) are common."""
    rng = np.random.default_rng(0)
    pieces = ["a", "b", "ab", "ba", "aab"]
    for _ in range(300):
        student = [("Ġ" if rng.random() < 0.3 else "") + rng.choice(pieces) for _ in range(rng.integers(1, 7))]
        teacher = [("▁" if rng.random() < 0.3 else "") + rng.choice(pieces) for _ in range(rng.integers(1, 7))]
        got = mined.one_to_one(mined.align_token_strings(student, teacher), len(student))
        assert got.tolist() == dskd_one_to_one(student, teacher), (student, teacher)


def test_one_to_one_rules():
    path = [(0, 0), (1, 0), (2, 1), (2, 2), (3, 3)]  # teacher 0 is shared; student 2 has two teacher tokens
    assert mined.one_to_one(path, 4).tolist() == [0, 0, -1, 3]  # DSKD: one teacher token per student token
    assert mined.one_to_one(path, 4, "both").tolist() == [-1, -1, -1, 3]
    with pytest.raises(ValueError, match="rule must be one of"):
        mined.one_to_one(path, 4, "teacher")


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


def brute_force_closest(source, target):
    """The closest plain target of each source form by (distance, distance without spaces, id), exhaustively."""
    out = []
    for form in source:
        if form.startswith(alignment_vocab.SPECIAL_PREFIX):
            out.append(target.index(form) if form in target else -1)
            continue
        keys = [(reference_edit_distance(form, t), reference_edit_distance(form.strip(), t.strip()), j)
                for j, t in enumerate(target) if not t.startswith(alignment_vocab.SPECIAL_PREFIX)]
        exact = [j for j, t in enumerate(target) if t == form]
        out.append(exact[0] if exact else min(keys)[2])
    return out


def test_closest_entries_equal_an_exhaustive_search():
    rng = np.random.default_rng(0)
    alphabet = list("ab c")
    target = ["".join(rng.choice(alphabet, rng.integers(1, 5))) for _ in range(40)] + ["\x00eos", "\x00bos"]
    source = ["".join(rng.choice(alphabet, rng.integers(0, 7))) for _ in range(60)] + ["\x00eos", "\x00pad"]
    ids, distances = mined.closest_entries(source, target)
    assert list(ids) == brute_force_closest(source, target)
    for form, j, d in zip(source, ids, distances):
        if j >= 0:
            assert d == reference_edit_distance(form, target[j])
    assert ids[-2] == target.index("\x00eos") and ids[-1] == -1  # specials only match their own role


def test_vocab_map_goes_teacher_to_closest_student_and_back_without_double_counting():
    s_tok, t_tok = awkward_tokenizers.byte_bpe(), awkward_tokenizers.wordpiece()
    vocab_map = mined.compute_vocab_map(s_tok, t_tok)
    s_forms, t_forms = alignment_vocab.vocabulary_forms(s_tok), alignment_vocab.vocabulary_forms(t_tok)
    assert vocab_map.teacher_to_student.shape == (len(t_forms),)
    assert vocab_map.student_to_teacher.shape == (len(s_forms),)
    s_vocab, t_vocab = s_tok.get_vocab(), t_tok.get_vocab()
    # WordPiece's word-initial "the" is byte-level BPE's "Ġthe"; its "##e" continuation is the plain "e".
    assert vocab_map.teacher_to_student[t_vocab["the"]] == s_vocab["Ġthe"]
    assert vocab_map.teacher_to_student[t_vocab["##e"]] == s_vocab["e"]
    assert vocab_map.teacher_to_student[t_tok.eos_token_id] == s_tok.eos_token_id
    assert vocab_map.student_to_teacher[s_vocab["Ġthe"]] == t_vocab["the"]
    # The inverse: each student id takes the closest teacher id among those mapping onto it, or none.
    s2t, t2s = vocab_map.student_to_teacher, vocab_map.teacher_to_student
    for s_id in range(len(s_forms)):
        onto = [t for t in range(len(t_forms)) if t2s[t] == s_id]
        if not onto:
            assert s2t[s_id] == -1
            continue
        best = min(onto, key=lambda t: (reference_edit_distance(t_forms[t], s_forms[s_id]), t))
        assert s2t[s_id] == best
    mapped = s2t[s2t >= 0]
    assert len(set(mapped.tolist())) == len(mapped)  # no teacher entry is used twice


def test_vocab_map_is_cached_on_disk(tmp_path, monkeypatch):
    s_tok, t_tok = awkward_tokenizers.byte_bpe(), awkward_tokenizers.wordpiece()
    first = mined.cached_vocab_map(s_tok, t_tok, str(tmp_path))
    assert len(list(tmp_path.glob("mined_vocab_map_*.npz"))) == 1
    monkeypatch.setattr(mined, "compute_vocab_map", lambda *a: pytest.fail("recomputed"))
    again = mined.cached_vocab_map(s_tok, t_tok, str(tmp_path))
    np.testing.assert_array_equal(again.teacher_to_student, first.teacher_to_student)
    np.testing.assert_array_equal(again.student_to_teacher, first.student_to_teacher)
    assert mined.vocab_pair_key(s_tok, t_tok) != mined.vocab_pair_key(t_tok, s_tok)


def test_default_cache_dir_follows_jdistill_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("JDISTILL_CACHE", str(tmp_path))
    assert mined.default_cache_dir() == str(tmp_path / "vocab_maps")


def test_mined_extras_by_hand(tmp_path):
    """Student: word-level with BOS; teacher: digits split, no BOS. "15" aligns one-to-many: not used."""
    texts = ["what is 7 plus 8 ? it is 15 ."]
    s_tok = tiny_setup.make_tokenizer(tmp_path / "a", texts)
    t_tok = tiny_setup.make_tokenizer_b(tmp_path / "b", texts)
    [example], _ = tokenize_examples(
        [TextExample("x", "what is 7 plus 8 ?", "it is 15 .")], s_tok, max_len=32, max_prompt_len=16,
        teacher_tokenizer=t_tok,
    )
    # student: <s> what is 7 plus 8 ? | it is 15 . </s>   (prompt_len 7)
    # teacher:     what is 7 plus 8 ? | it is 1 5 . <eos> (prompt_len 6)
    assert example.student.prompt_len == 7 and example.teacher.prompt_len == 6
    vocab_map = mined.compute_vocab_map(s_tok, t_tok)
    out = mined.mined_extras(example, s_tok, t_tok, vocab_map.teacher_to_student)
    # Predicting positions: student 6..10 (inputs ? it is 15 .), teacher 5..10 (inputs ? it is 1 5 .).
    np.testing.assert_array_equal(out["mined_mask"], [0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 1, 0])
    np.testing.assert_array_equal(out["mined_teacher_index"][[6, 7, 8, 10]], [5, 6, 7, 10])
    assert out["mined_teacher_index"].dtype == np.int32 and out["mined_mask"].dtype == np.float32


def test_mined_extras_drop_an_alignment_whose_tokens_do_not_map_onto_each_other(tmp_path):
    texts = ["what is 7 plus 8 ? it is 15 ."]
    s_tok = tiny_setup.make_tokenizer(tmp_path / "a", texts)
    t_tok = tiny_setup.make_tokenizer_b(tmp_path / "b", texts)
    [example], _ = tokenize_examples(
        [TextExample("x", "what is 7 plus 8 ?", "it is 15 .")], s_tok, max_len=32, max_prompt_len=16,
        teacher_tokenizer=t_tok,
    )
    t2s = mined.compute_vocab_map(s_tok, t_tok).teacher_to_student.copy()
    t2s[t_tok.get_vocab()["it"]] = s_tok.get_vocab()["is"]  # the teacher's "it" no longer maps to "it"
    out = mined.mined_extras(example, s_tok, t_tok, t2s)
    np.testing.assert_array_equal(out["mined_mask"][6:11], [1, 0, 1, 0, 1])


def reference_path(student, teacher):
    """The DTW path by plain nested loops (diagonal first on ties, then up, then left)."""
    n, m = len(student), len(teacher)
    cost = [[reference_edit_distance(mined.normalize_token(a), mined.normalize_token(b)) for b in teacher]
            for a in student]
    total = [[float("inf")] * (m + 1) for _ in range(n + 1)]
    total[0][0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            total[i][j] = cost[i - 1][j - 1] + min(total[i - 1][j], total[i][j - 1], total[i - 1][j - 1])
    path, i, j = [], n, m
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        options = [(total[i - 1][j - 1], 0, (i - 1, j - 1)), (total[i - 1][j], 1, (i - 1, j)),
                   (total[i][j - 1], 2, (i, j - 1))]
        i, j = min(options)[2]
    return path[::-1]


@pytest.mark.parametrize("seed", range(4))
def test_alignment_equals_a_plain_dynamic_program(seed):
    rng = np.random.default_rng(seed)
    pieces = ["Ġthe", "the", "##e", "▁a", "a", "ab", "b", "abc", "Ġ1", "1", "5", "15", "."]
    student = list(rng.choice(pieces, rng.integers(1, 25)))
    teacher = list(rng.choice(pieces, rng.integers(1, 25)))
    assert mined.align_token_strings(student, teacher) == reference_path(student, teacher)


def test_docstring_examples():
    import doctest

    result = doctest.testmod(mined, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
