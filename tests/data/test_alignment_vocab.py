"""Tokenizer-independent vocabulary forms and the matched vocabulary of two tokenizers."""

import numpy as np
import pytest

from jdistill.data import alignment_vocab as av
from tests.data import awkward_tokenizers


@pytest.fixture(scope="module")
def tokenizers():
    return {
        "byte_bpe": awkward_tokenizers.byte_bpe(),
        "metaspace": awkward_tokenizers.metaspace(),
        "wordpiece": awkward_tokenizers.wordpiece(),
    }


def form(tokenizer, token):
    return av.vocabulary_forms(tokenizer)[tokenizer.get_vocab()[token]]


def test_byte_alphabet_is_a_bijection_with_printable_bytes_kept():
    table = av.byte_alphabet()
    assert sorted(table.values()) == list(range(256))
    assert table["A"] == ord("A") and table["Ġ"] == ord(" ") and table["Ċ"] == ord("\n")


def test_byte_level_forms_decode_bytes(tokenizers):
    tok = tokenizers["byte_bpe"]
    assert form(tok, "Ġthe") == " the"
    assert form(tok, "Ã©") == "é"  # two byte-level characters, one UTF-8 character
    assert form(tok, "rÃ") == "r\ufffd"  # half a character: a replacement character, never an error


def test_metaspace_and_wordpiece_forms(tokenizers):
    assert form(tokenizers["metaspace"], "▁the") == " the"
    wp = tokenizers["wordpiece"]
    assert form(wp, "the") == " the"  # word-initial: the space that precedes a word
    assert form(wp, "##e") == "e"  # continuation
    assert form(wp, ",") == ","  # punctuation attaches to the previous word


def test_special_tokens_take_their_role(tokenizers):
    forms = {name: av.vocabulary_forms(tok) for name, tok in tokenizers.items()}
    assert forms["byte_bpe"][tokenizers["byte_bpe"].eos_token_id] == "\x00eos"  # its pad is the same id
    assert forms["wordpiece"][tokenizers["wordpiece"].eos_token_id] == "\x00eos"  # "[SEP]"
    assert forms["metaspace"][tokenizers["metaspace"].bos_token_id] == "\x00bos"
    assert forms["wordpiece"][tokenizers["wordpiece"].pad_token_id] == "\x00pad"


def test_matched_vocabulary_pairs_equal_forms_once(tokenizers):
    s_tok, t_tok = tokenizers["byte_bpe"], tokenizers["wordpiece"]
    student_ids, teacher_ids = av.matched_vocabulary(s_tok, t_tok)
    s_forms, t_forms = av.vocabulary_forms(s_tok), av.vocabulary_forms(t_tok)
    assert len(student_ids) == len(teacher_ids) > 20
    assert list(student_ids) == sorted(student_ids)
    assert len(set(student_ids.tolist())) == len(student_ids) and len(set(teacher_ids.tolist())) == len(teacher_ids)
    for s_id, t_id in zip(student_ids, teacher_ids):
        assert s_forms[s_id] == t_forms[t_id]
        assert s_id == s_forms.index(s_forms[s_id]) and t_id == t_forms.index(t_forms[t_id])  # lowest ids
    expected = {f for f in set(s_forms) & set(t_forms)}
    assert {s_forms[i] for i in student_ids} == expected
    s_vocab, t_vocab = s_tok.get_vocab(), t_tok.get_vocab()
    pairs = dict(zip(student_ids.tolist(), teacher_ids.tolist()))
    assert pairs[s_vocab["Ġthe"]] == t_vocab["the"]
    assert pairs[s_tok.eos_token_id] == t_tok.eos_token_id


def test_one_tokenizer_matches_itself_entirely(tokenizers):
    tok = tokenizers["metaspace"]
    student_ids, teacher_ids = av.matched_vocabulary(tok, tok)
    forms = av.vocabulary_forms(tok)
    assert len(student_ids) == len(set(forms))
    np.testing.assert_array_equal(student_ids, teacher_ids)
