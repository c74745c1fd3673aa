"""MinED alignment (FuseLLM, Wan et al., 2024; DSKD's MinED baseline), on the host.

Three pieces, all from token *strings* (never decoding text in a loop):

* a sequence alignment of the student's and the teacher's tokens of one text
  by dynamic programming (dynamic time warping) whose matching cost is the
  edit distance between the two token strings; a student token *aligns
  one-to-one* when it is matched to exactly one teacher token (DSKD's rule,
  ``rule='student'``), or, with ``rule='both'``, when that teacher token is
  also matched to no other student token;
* a vocabulary map (:func:`compute_vocab_map`): every teacher id → the student
  id whose form (:mod:`jdistill.data.alignment_vocab`) is closest in edit
  distance, and its partial inverse student id → teacher id (for each student
  id the closest teacher id that maps onto it; ids nothing maps onto are
  unmapped). It is computed once per tokenizer pair and cached on disk
  (:func:`cached_vocab_map`) in a file named by a hash of both vocabularies;
* :func:`mined_extras`: for every student position that predicts a response
  token, the teacher position whose next-token distribution stands in for it.

For the sequence alignment, token strings are normalised so that tokenizer
conventions do not count as edits: the space markers ``Ġ`` (byte-level BPE)
and ``▁`` (SentencePiece) are deleted (``markers='delete'``, as DSKD's
``dist_fn`` does) or become a plain space (``'space'``), and a WordPiece
``##`` continuation prefix is dropped. Among equally cheap alignments the
backtracking prefers, as DSKD's ``dtw``, a diagonal step, then a step back on
the teacher's side, then one on the student's.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import Any, Sequence

import numpy as np

from jdistill.data import alignment_vocab

SPACE_MARKERS = ("Ġ", "▁")
MARKER_RULES = ("delete", "space")  # what the sequence alignment's cost does with a space marker
ONE_TO_ONE_RULES = ("student", "both")  # which side must see a single match for a token to align


def normalize_token(token: str, markers: str = "delete") -> str:
    """Tokenizer-independent form of a token string for the alignment cost.

    ``markers='delete'`` removes ``Ġ`` and ``▁`` (DSKD), ``'space'`` writes a
    space for them; a WordPiece ``##`` prefix is dropped either way.

    Example:
      >>> normalize_token("Ġhello"), normalize_token("▁hello", "space"), normalize_token("##lo")
      ('hello', ' hello', 'lo')
    """
    if markers not in MARKER_RULES:
        raise ValueError(f"normalize_token: markers must be one of {MARKER_RULES}, got {markers!r}.")
    replacement = "" if markers == "delete" else " "
    for marker in SPACE_MARKERS:
        token = token.replace(marker, replacement)
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


@functools.lru_cache(maxsize=1 << 16)
def token_distance(a: str, b: str) -> int:
    """:func:`edit_distance` memoised for sequence alignment, where the same token pairs recur."""
    return edit_distance(a, b)


def _cost_matrix(student: Sequence[str], teacher: Sequence[str], markers: str) -> np.ndarray:
    """``[n, m]`` edit distances of the normalised strings, computed once per distinct pair."""
    s_unique, s_index = np.unique([normalize_token(x, markers) for x in student], return_inverse=True)
    t_unique, t_index = np.unique([normalize_token(x, markers) for x in teacher], return_inverse=True)
    table = np.array([[token_distance(str(a), str(b)) for b in t_unique] for a in s_unique], np.float64)
    return table[np.ix_(s_index.reshape(-1), t_index.reshape(-1))]


def _dtw_totals(cost: np.ndarray) -> np.ndarray:
    """``D`` ``[n + 1, m + 1]`` of the DTW recurrence, one anti-diagonal ``i + j = d`` at a time (vectorised)."""
    n, m = cost.shape
    total = np.full((n + 1, m + 1), np.inf)
    total[0, 0] = 0.0
    for d in range(2, n + m + 1):
        i = np.arange(max(1, d - m), min(n, d - 1) + 1)
        j = d - i
        best = np.minimum(np.minimum(total[i - 1, j], total[i, j - 1]), total[i - 1, j - 1])
        total[i, j] = cost[i - 1, j - 1] + best
    return total


def align_token_strings(
    student: Sequence[str], teacher: Sequence[str], markers: str = "delete"
) -> list[tuple[int, int]]:
    """Monotone alignment path ``[(i, j), ...]`` minimising summed edit distances (DTW).

    ``D[i, j] = ed(s_i, t_j) + min(D[i-1, j], D[i, j-1], D[i-1, j-1])`` over the
    strings normalised by :func:`normalize_token`; the path covers every token
    of both sides at least once. Backtracking from ``(n, m)`` takes the first
    cheapest of: the diagonal, a teacher step ``(i, j-1)``, a student step
    ``(i-1, j)`` (DSKD's ``dtw`` order, ``min_edit_dis_kld.py`` lines 390-400).
    """
    n, m = len(student), len(teacher)
    if n == 0 or m == 0:
        return []
    total = _dtw_totals(_cost_matrix(student, teacher, markers))
    path, i, j = [], n, m
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        moves = ((i - 1, j - 1), (i, j - 1), (i - 1, j))
        i, j = min(moves, key=lambda k: total[k])  # the first of equal totals wins
    return path[::-1]


def one_to_one(path: Sequence[tuple[int, int]], num_student: int, rule: str = "student") -> np.ndarray:
    """``[num_student]`` int32: the teacher index a student token aligns one-to-one with, else -1.

    ``rule='student'`` (DSKD): the student token is on exactly one pair of the
    path; ``'both'``: its teacher token is, too.
    """
    if rule not in ONE_TO_ONE_RULES:
        raise ValueError(f"one_to_one: rule must be one of {ONE_TO_ONE_RULES}, got {rule!r}.")
    s_count, t_count = {}, {}
    for i, j in path:
        s_count[i] = s_count.get(i, 0) + 1
        t_count[j] = t_count.get(j, 0) + 1
    out = np.full(num_student, -1, np.int32)
    for i, j in path:
        if s_count[i] == 1 and (rule == "student" or t_count[j] == 1):
            out[i] = j
    return out


def response_alignment(student_tokenizer: Any, teacher_tokenizer: Any, student_ids, teacher_ids, *,
                       markers: str = "delete", rule: str = "student") -> np.ndarray:
    """One-to-one teacher index (or -1) of every student response token, from token strings."""
    s_tokens = student_tokenizer.convert_ids_to_tokens([int(x) for x in student_ids])
    t_tokens = teacher_tokenizer.convert_ids_to_tokens([int(x) for x in teacher_ids])
    return one_to_one(align_token_strings(s_tokens, t_tokens, markers), len(s_tokens), rule)




@dataclasses.dataclass(frozen=True)
class VocabMap:
    """MinED's vocabulary map of one (student, teacher) tokenizer pair.

    Attributes:
      teacher_to_student: ``[V_t]`` int32, the closest student id of every
        teacher id (-1 for a special token the student lacks).
      student_to_teacher: ``[V_s]`` int32, for every student id the closest
        teacher id among those that map onto it, -1 when none does.
    """

    teacher_to_student: np.ndarray
    student_to_teacher: np.ndarray


def closest_entries(source_forms: Sequence[str], target_forms: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """For every source form, the target id whose form is closest in edit distance.

    An exact match wins (the lowest id with that form). Otherwise candidates are
    ranked by ``(edit distance, edit distance without surrounding spaces, id)``
    and searched in order of length difference (a lower bound of the edit
    distance), stopping once no closer candidate can remain. Special forms
    (:data:`alignment_vocab.SPECIAL_PREFIX`) match only the same special form
    and are never candidates for plain ones.

    Returns:
      ``(ids, distances)``, both ``[len(source_forms)]`` int32; id -1 (distance
      -1) where nothing can match.
    """
    special = alignment_vocab.SPECIAL_PREFIX
    exact = alignment_vocab.first_id_of_form(list(target_forms))
    by_length: dict[int, list[tuple[str, int]]] = {}
    for idx, form in enumerate(target_forms):
        if not form.startswith(special) and exact[form] == idx:
            by_length.setdefault(len(form), []).append((form, idx))
    lengths = sorted(by_length)
    ids = np.full(len(source_forms), -1, np.int32)
    distances = np.full(len(source_forms), -1, np.int32)
    for s_idx, form in enumerate(source_forms):
        if form in exact:
            ids[s_idx], distances[s_idx] = exact[form], 0
            continue
        if form.startswith(special) or not lengths:
            continue
        best = None
        for length in sorted(lengths, key=lambda n: (abs(n - len(form)), n)):
            if best is not None and abs(length - len(form)) > best[0]:
                break
            for cand, t_idx in by_length[length]:
                d = edit_distance(form, cand)
                if best is not None and d > best[0]:
                    continue
                key = (d, edit_distance(form.strip(), cand.strip()), t_idx)
                if best is None or key < best:
                    best = key
        ids[s_idx], distances[s_idx] = best[2], best[0]
    return ids, distances


def compute_vocab_map(student_tokenizer: Any, teacher_tokenizer: Any) -> VocabMap:
    """MinED's map between the two vocabularies (see :class:`VocabMap`).

    As in DSKD's MinED: each teacher id goes to its closest student id, and a
    student id takes the teacher distribution's value of the (closest) teacher
    id mapping onto it, so that no teacher entry is counted twice.
    """
    s_forms = alignment_vocab.vocabulary_forms(student_tokenizer)
    t_forms = alignment_vocab.vocabulary_forms(teacher_tokenizer)
    t2s, distances = closest_entries(t_forms, s_forms)
    s2t = np.full(len(s_forms), -1, np.int32)
    for t_idx in np.argsort(distances, kind="stable"):  # closest first, then the lowest teacher id
        s_idx = t2s[t_idx]
        if s_idx >= 0 and s2t[s_idx] < 0:
            s2t[s_idx] = t_idx
    return VocabMap(teacher_to_student=t2s, student_to_teacher=s2t)


def vocab_pair_key(student_tokenizer: Any, teacher_tokenizer: Any) -> str:
    """A hash naming one (student, teacher) vocabulary pair (and this map's version)."""
    digest = hashlib.sha256(b"mined-vocab-map-v2")
    for tokenizer in (student_tokenizer, teacher_tokenizer):
        digest.update(json.dumps(alignment_vocab.vocabulary_items(tokenizer), ensure_ascii=False).encode())
        digest.update(json.dumps(alignment_vocab.vocabulary_forms(tokenizer), ensure_ascii=False).encode())
    return digest.hexdigest()[:24]


def default_cache_dir() -> str:
    """``$JDISTILL_CACHE/vocab_maps`` (default ``~/.cache/jdistill/vocab_maps``)."""
    base = os.environ.get("JDISTILL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "jdistill")
    return os.path.join(base, "vocab_maps")


def cached_vocab_map(student_tokenizer: Any, teacher_tokenizer: Any, cache_dir: str = "") -> VocabMap:
    """:func:`compute_vocab_map`, stored once per vocabulary pair under ``cache_dir`` (``.npz``).

    ``cache_dir`` empty means :func:`default_cache_dir`. Written atomically, so
    concurrent runs never read half a file.
    """
    cache_dir = cache_dir or default_cache_dir()
    path = os.path.join(cache_dir, f"mined_vocab_map_{vocab_pair_key(student_tokenizer, teacher_tokenizer)}.npz")
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as stored:
            return VocabMap(stored["teacher_to_student"], stored["student_to_teacher"])
    vocab_map = compute_vocab_map(student_tokenizer, teacher_tokenizer)
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    np.savez(tmp, teacher_to_student=vocab_map.teacher_to_student, student_to_teacher=vocab_map.student_to_teacher)
    os.replace(tmp, path)
    return vocab_map


def mined_extras(example: Any, student_tokenizer: Any, teacher_tokenizer: Any, teacher_to_student: np.ndarray, *,
                 markers: str = "delete", rule: str = "student") -> dict:
    """MinED's per-position arrays of one :class:`jdistill.data.TokenizedExample`.

    Student position ``t`` (input token ``x_t``) predicts ``x_{t+1}``; the
    positions that predict response tokens are ``prompt_len - 1 .. n - 2``, on
    each side. Their *input* tokens are aligned by :func:`response_alignment`
    (as FuseLLM/DSKD align the per-step distributions), and a student position
    takes the aligned teacher position when the alignment is one-to-one and
    the teacher's input token maps onto the student's
    (``teacher_to_student[x'_j] == x_t``, DSKD's check that the two really are
    the same token). ``markers`` and ``rule`` are those of
    :func:`normalize_token` and :func:`one_to_one`.

    Returns:
      ``{'mined_teacher_index': [n] int32, 'mined_mask': [n] float32}`` over
      the student sequence: the teacher position, and 1 where it is used (0
      elsewhere: the loss falls back to the gold token there).
    """
    s_ids, t_ids = np.asarray(example.student.ids), np.asarray(example.teacher.ids)
    s_pos = np.arange(example.student.prompt_len - 1, len(s_ids) - 1)
    t_pos = np.arange(example.teacher.prompt_len - 1, len(t_ids) - 1)
    index = np.zeros(len(s_ids), np.int32)
    mask = np.zeros(len(s_ids), np.float32)
    aligned = response_alignment(student_tokenizer, teacher_tokenizer, s_ids[s_pos], t_ids[t_pos],
                                 markers=markers, rule=rule)
    for k, j in enumerate(aligned):
        if j < 0:
            continue
        teacher_token = int(t_ids[t_pos[j]])
        if teacher_token < len(teacher_to_student) and teacher_to_student[teacher_token] == s_ids[s_pos[k]]:
            index[s_pos[k]] = t_pos[j]
            mask[s_pos[k]] = 1.0
    return {"mined_teacher_index": index, "mined_mask": mask}
