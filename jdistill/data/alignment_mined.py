"""MinED alignment (FuseLLM, Wan et al., 2024), on the host.

Two pieces, both from token *strings* (``convert_ids_to_tokens``, never decoding):

* a sequence alignment of the student's and the teacher's tokens of one text
  by dynamic programming (dynamic time warping) whose matching cost is the
  edit distance between the two token strings; a student token *aligns
  one-to-one* when it is matched to exactly one teacher token that is matched
  to no other student token;
* a vocabulary map: every student id → the teacher id whose token string is
  closest in edit distance (exact matches first). It is computed once per
  tokenizer pair and cached on disk as a ``.npy`` file named by a hash of both
  vocabularies.

Token strings are normalised before comparison so that tokenizer conventions
do not count as edits: the space markers ``Ġ`` (byte-level BPE) and ``▁``
(SentencePiece) become a plain space, and a WordPiece ``##`` continuation
prefix is dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Sequence

import numpy as np

SPACE_MARKERS = ("Ġ", "▁")


def normalize_token(token: str) -> str:
    """Tokenizer-independent form of a token string."""
    for marker in SPACE_MARKERS:
        token = token.replace(marker, " ")
    if token.startswith("##"):
        token = token[2:]
    return token


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (unit insert, delete, substitute)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def align_token_strings(student: Sequence[str], teacher: Sequence[str]) -> list[tuple[int, int]]:
    """Monotone alignment path ``[(i, j), ...]`` minimising summed edit distances (DTW).

    ``D[i, j] = ed(s_i, t_j) + min(D[i-1, j], D[i, j-1], D[i-1, j-1])``; the path
    covers every token of both sides at least once.
    """
    n, m = len(student), len(teacher)
    if n == 0 or m == 0:
        return []
    s = [normalize_token(x) for x in student]
    t = [normalize_token(x) for x in teacher]
    cost = np.array([[edit_distance(a, b) for b in t] for a in s], np.float64)
    total = np.full((n + 1, m + 1), np.inf)
    total[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            total[i, j] = cost[i - 1, j - 1] + min(total[i - 1, j], total[i, j - 1], total[i - 1, j - 1])
    path, i, j = [], n, m
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        moves = {(i - 1, j - 1): total[i - 1, j - 1], (i - 1, j): total[i - 1, j], (i, j - 1): total[i, j - 1]}
        i, j = min(moves, key=lambda k: (moves[k], k != (i - 1, j - 1)))
    return path[::-1]


def one_to_one(path: Sequence[tuple[int, int]], num_student: int) -> np.ndarray:
    """``[num_student]`` int32: the teacher index a student token aligns one-to-one with, else -1."""
    s_count, t_count = {}, {}
    for i, j in path:
        s_count[i] = s_count.get(i, 0) + 1
        t_count[j] = t_count.get(j, 0) + 1
    out = np.full(num_student, -1, np.int32)
    for i, j in path:
        if s_count[i] == 1 and t_count[j] == 1:
            out[i] = j
    return out


def response_alignment(student_tokenizer: Any, teacher_tokenizer: Any, student_ids, teacher_ids) -> np.ndarray:
    """One-to-one teacher index (or -1) of every student response token, from token strings."""
    s_tokens = student_tokenizer.convert_ids_to_tokens([int(x) for x in student_ids])
    t_tokens = teacher_tokenizer.convert_ids_to_tokens([int(x) for x in teacher_ids])
    return one_to_one(align_token_strings(s_tokens, t_tokens), len(s_tokens))


def _vocab_items(tokenizer: Any) -> list[tuple[str, int]]:
    return sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])


def vocab_pair_key(student_tokenizer: Any, teacher_tokenizer: Any) -> str:
    """A hash naming one (student, teacher) vocabulary pair."""
    digest = hashlib.sha256()
    for tokenizer in (student_tokenizer, teacher_tokenizer):
        digest.update(json.dumps(_vocab_items(tokenizer), ensure_ascii=False).encode())
    return digest.hexdigest()[:24]


def compute_vocab_map(student_tokenizer: Any, teacher_tokenizer: Any) -> np.ndarray:
    """``[V_s]`` int32: the closest teacher id of every student id by normalised edit distance.

    Exact (normalised) matches are looked up; the rest search teacher strings
    in order of length difference (a lower bound of the edit distance) and
    stop as soon as no closer string can remain. Ties go to the lowest id.
    """
    student = _vocab_items(student_tokenizer)
    teacher = [(normalize_token(tok), idx) for tok, idx in _vocab_items(teacher_tokenizer)]
    exact: dict[str, int] = {}
    by_length: dict[int, list[tuple[str, int]]] = {}
    for tok, idx in teacher:
        exact.setdefault(tok, idx)
        by_length.setdefault(len(tok), []).append((tok, idx))
    lengths = sorted(by_length)
    size = max(idx for _, idx in student) + 1
    out = np.zeros(size, np.int32)
    for tok, s_idx in student:
        norm = normalize_token(tok)
        if norm in exact:
            out[s_idx] = exact[norm]
            continue
        best = (len(norm) + max(lengths), -1)
        for length in sorted(lengths, key=lambda n: (abs(n - len(norm)), n)):
            if abs(length - len(norm)) >= best[0]:
                break
            for cand, t_idx in by_length[length]:
                best = min(best, (edit_distance(norm, cand), t_idx))
        out[s_idx] = best[1]
    return out


def cached_vocab_map(student_tokenizer: Any, teacher_tokenizer: Any, cache_dir: str) -> np.ndarray:
    """:func:`compute_vocab_map`, stored once per vocabulary pair under ``cache_dir``."""
    path = os.path.join(cache_dir, f"mined_vocab_map_{vocab_pair_key(student_tokenizer, teacher_tokenizer)}.npy")
    if os.path.exists(path):
        return np.load(path, allow_pickle=False)
    vocab_map = compute_vocab_map(student_tokenizer, teacher_tokenizer)
    os.makedirs(cache_dir, exist_ok=True)
    tmp = path + ".tmp.npy"
    np.save(tmp, vocab_map, allow_pickle=False)
    os.replace(tmp, path)
    return vocab_map
