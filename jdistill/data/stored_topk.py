"""A teacher's top-k next-token targets stored with its responses (offline sparse KD).

``jdistill.generate`` with ``generation.num_topk_logprobs = k`` writes, next to
each response, the ids it generated and, for each of them, the teacher's ``k``
most likely tokens with their log-probabilities (of the full, unfiltered
softmax)::

    {"prompt": ..., "response": ..., "stop": "eos",
     "response_ids": [12, 7, 2],
     "teacher_topk": {"ids": [[12, 5], [7, 9], [2, 7]], "logprobs": [[-0.1, -2.5], ...]}}

Row ``i`` of ``teacher_topk`` is the teacher's distribution that produced
``response_ids[i]``. :func:`parse_stored_topk` reads such a record;
:func:`topk_extras` lays the rows out along a tokenized example so that the row
at sequence position ``t`` belongs to the target ``t + 1`` (the layout of
:func:`jdistill.data.batching.collate`'s ``targets``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

FIELD = "teacher_topk"
IDS_KEY, LOGPROBS_KEY = "teacher_topk_ids", "teacher_topk_logprobs"


@dataclasses.dataclass(frozen=True, eq=False)
class StoredTopK:
    """One record's stored targets.

    Attributes:
      response_ids: ``[N]`` the teacher's response ids (its EOS last when it stopped).
      ids: ``[N, k]`` int32 top-k ids per response position.
      logprobs: ``[N, k]`` float32 log-probabilities of ``ids``.
      ended: the teacher stopped with an EOS (``stop == 'eos'``): the last response id is it.
    """

    response_ids: np.ndarray
    ids: np.ndarray
    logprobs: np.ndarray
    ended: bool

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])


def parse_stored_topk(record: dict) -> tuple[str | None, StoredTopK | None]:
    """``(None, targets)``, or ``(why the record's targets are unusable, None)``."""
    topk, response_ids = record.get(FIELD), record.get("response_ids")
    if not isinstance(topk, dict) or not isinstance(response_ids, list) or not response_ids:
        return f"'{FIELD}' is not {{ids, logprobs}} or 'response_ids' is missing", None
    ids, logprobs = topk.get("ids"), topk.get("logprobs")
    try:
        response_N = np.asarray(response_ids, np.int64)
        ids_NxK = np.asarray(ids, np.int64)
        logprobs_NxK = np.asarray([[float(v) for v in row] for row in logprobs], np.float32)
    except (TypeError, ValueError):
        return f"'{FIELD}' holds non-numeric or ragged values", None
    n = len(response_N)
    if response_N.ndim != 1 or ids_NxK.ndim != 2 or ids_NxK.shape != logprobs_NxK.shape or len(ids_NxK) != n:
        return f"'{FIELD}' needs one row of k ids and k log-probs per response id", None
    if ids_NxK.shape[1] < 1 or (ids_NxK < 0).any() or (response_N < 0).any():
        return f"'{FIELD}' has no ids or negative ids", None
    if np.isnan(logprobs_NxK).any() or (logprobs_NxK > 1e-3).any():
        return f"'{FIELD}' log-probabilities must be <= 0", None
    ended = record.get("stop") == "eos"
    return None, StoredTopK(response_N.astype(np.int32), ids_NxK.astype(np.int32),
                            np.minimum(logprobs_NxK, 0.0), ended)


def response_text_ids(targets: StoredTopK) -> list[int]:
    """The response ids without the final EOS (what the record's text was decoded from)."""
    ids = [int(v) for v in targets.response_ids]
    return ids[:-1] if targets.ended else ids


def topk_extras(targets: StoredTopK, *, num_positions: int, prompt_len: int, response_len: int) -> dict:
    """Per-position arrays for :attr:`TokenizedExample.extras`.

    The sequence is ``prompt_len`` prompt tokens then the first ``response_len``
    response ids (after truncation); position ``prompt_len - 1 + i`` predicts
    response id ``i`` and gets its top-k row. Other rows are zero (no loss there).

    Returns:
      ``{'teacher_topk_ids': [num_positions, k] int32, 'teacher_topk_logprobs': [num_positions, k] float32}``.
    """
    if response_len > len(targets.response_ids) or prompt_len + response_len != num_positions:
        raise ValueError(
            f"topk_extras: {prompt_len} prompt + {response_len} response positions do not make "
            f"{num_positions}, or exceed the {len(targets.response_ids)} stored rows."
        )
    ids = np.zeros((num_positions, targets.k), np.int32)
    logprobs = np.zeros((num_positions, targets.k), np.float32)
    rows = slice(prompt_len - 1, prompt_len - 1 + response_len)
    ids[rows] = targets.ids[:response_len]
    logprobs[rows] = targets.logprobs[:response_len]
    return {IDS_KEY: ids, LOGPROBS_KEY: logprobs}
