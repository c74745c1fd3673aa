"""Tokenizer-independent forms of vocabulary entries, for mapping one vocabulary onto another.

Two tokenizers spell the same text differently: byte-level BPE writes a
leading space as ``Ġ`` and a newline as ``Ċ`` (every byte is one printable
character), SentencePiece writes the space as ``▁``, and WordPiece drops the
space and marks a word's *continuation* with ``##`` instead. The *form* of a
vocabulary entry undoes these conventions so that the same piece of text has
the same form in every vocabulary:

* byte-level BPE (every character of the vocabulary is in the byte alphabet):
  the characters are mapped back to bytes and decoded as UTF-8 (``Ġthe`` →
  ``" the"``, ``Ã©`` → ``"é"``; a piece of a multi-byte character keeps a
  replacement character);
* SentencePiece-style markers ``▁`` (and a stray ``Ġ``) become a space;
* WordPiece (a vocabulary with ``##`` continuations and no space markers):
  ``##ing`` → ``"ing"``; a word-initial entry gets the space that precedes a
  word in running text (``the`` → ``" the"``), except punctuation, which is
  usually attached to the previous word (``.`` stays ``"."``);
* special tokens take the form of their *role* (``<eos>`` of one tokenizer and
  ``</s>`` of another are both the end of sequence), so they match each other
  and nothing else.

Used by MinED's vocabulary map (:mod:`jdistill.data.alignment_mined`) and by
the exact-alignment method's matched vocabulary (:func:`matched_vocabulary`).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

SPECIAL_PREFIX = "\x00"  # Forms of special tokens start with it; no text form does.
SPACE_MARKERS = ("Ġ", "▁")


@functools.lru_cache(maxsize=1)
def byte_alphabet() -> dict[str, int]:
    """Byte-level BPE's printable stand-in character → the byte it encodes (GPT-2's table).

    Printable Latin-1 bytes stand for themselves; the other 68 bytes (controls,
    space, ...) are given the characters ``chr(256)``, ``chr(257)``, ... in byte order.
    """
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1))
    printable |= set(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[chr(byte)] = byte
        else:
            table[chr(256 + extra)] = byte
            extra += 1
    return table


def vocabulary_items(tokenizer: Any) -> list[tuple[str, int]]:
    """``(token string, id)`` of the whole vocabulary (added tokens included), by id."""
    return sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])


def _special_roles(tokenizer: Any) -> dict[int, str]:
    """``id → role`` of the tokenizer's EOS, BOS, UNK and PAD (a PAD that is also the EOS is EOS)."""
    by_role = (("pad", tokenizer.pad_token_id), ("unk", tokenizer.unk_token_id),
               ("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id))
    return {int(token_id): role for role, token_id in by_role if token_id is not None}


def _is_wordpiece(tokens: list[str]) -> bool:
    has_continuations = any(t.startswith("##") and len(t) > 2 for t in tokens)
    has_space_markers = any(t.startswith(SPACE_MARKERS) for t in tokens)
    return has_continuations and not has_space_markers


def _is_byte_level(tokens: list[str]) -> bool:
    alphabet = byte_alphabet()
    return any(t.startswith("Ġ") for t in tokens) and all(ch in alphabet for t in tokens for ch in t)


def _is_punctuation(token: str) -> bool:
    return bool(token) and not any(ch.isalnum() or ch.isspace() for ch in token)


def _byte_form(token: str) -> str:
    alphabet = byte_alphabet()
    return bytes(alphabet[ch] for ch in token).decode("utf-8", errors="replace")


def _wordpiece_form(token: str) -> str:
    if token.startswith("##"):
        return token[2:]
    return token if _is_punctuation(token) else " " + token


def _marker_form(token: str) -> str:
    for marker in SPACE_MARKERS:
        token = token.replace(marker, " ")
    return token


def vocabulary_forms(tokenizer: Any) -> list[str]:
    """The form of every id ``0 .. max_id`` (ids missing from the vocabulary get a special form).

    Special tokens with a role (EOS, BOS, UNK, PAD) become ``"\\x00eos"`` etc.;
    other special/added tokens ``"\\x00" + token``, so they only equal the same
    special token of another vocabulary.
    """
    items = vocabulary_items(tokenizer)
    roles = _special_roles(tokenizer)
    specials = set(getattr(tokenizer, "all_special_ids", ())) | set(roles)
    plain = [tok for tok, idx in items if idx not in specials]
    if _is_wordpiece(plain):
        form_of = _wordpiece_form
    elif _is_byte_level(plain):
        form_of = _byte_form
    else:
        form_of = _marker_form
    forms = [SPECIAL_PREFIX + "missing"] * (items[-1][1] + 1 if items else 0)
    for tok, idx in items:
        if idx in roles:
            forms[idx] = SPECIAL_PREFIX + roles[idx]
        elif idx in specials:
            forms[idx] = SPECIAL_PREFIX + tok
        else:
            forms[idx] = form_of(tok)
    return forms


def first_id_of_form(forms: list[str]) -> dict[str, int]:
    """``form → lowest id`` with that form."""
    out: dict[str, int] = {}
    for idx, form in enumerate(forms):
        out.setdefault(form, idx)
    return out


def matched_vocabulary(student_tokenizer: Any, teacher_tokenizer: Any) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of entries with the same form in both vocabularies.

    Returns:
      ``(student_ids [K], teacher_ids [K])`` int32, sorted by student id: for
      every form present in both vocabularies, the lowest student id and the
      lowest teacher id with that form (an entry whose form repeats within its
      own vocabulary is matched once; the others stay unmatched).
    """
    s_first = first_id_of_form(vocabulary_forms(student_tokenizer))
    t_first = first_id_of_form(vocabulary_forms(teacher_tokenizer))
    pairs = sorted((s_id, t_first[form]) for form, s_id in s_first.items()
                   if form in t_first and form != SPECIAL_PREFIX + "missing")
    student_ids = np.array([s for s, _ in pairs], np.int32)
    teacher_ids = np.array([t for _, t in pairs], np.int32)
    return student_ids, teacher_ids
