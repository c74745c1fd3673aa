"""Token alignments between the student's and the teacher's tokenization, on the host.

Computed in the data pipeline from the collated numpy arrays (never in the
jitted step), and added to the batch as plain integer/float arrays.

* :func:`positional_response_alignment` (ULD): the ``i``-th response token of
  the student is paired with the ``i``-th response token of the teacher (turn
  by turn in a chat); no real alignment, as in Boizard et al., 2024.
"""

from __future__ import annotations

import numpy as np


def positional_response_alignment(loss_mask_BxS: np.ndarray, teacher_loss_mask_BxT: np.ndarray) -> dict:
    """Pairs the ``i``-th student response position with the ``i``-th teacher one.

    A chat example's response is several assistant turns (runs of the mask):
    the ``j``-th run of one side is paired with the ``j``-th run of the other,
    position by position, so a turn never borrows another turn's positions.

    Args:
      loss_mask_BxS: ``[B, S]`` student response mask (1 where the target is a response token).
      teacher_loss_mask_BxT: ``[B, T]`` the same in the teacher's tokenization.

    Returns:
      ``{'uld_teacher_index': [B, S] int32, 'uld_mask': [B, S] float32}``: for each
      student position the teacher position holding the same response rank, and
      1 where both sides have that rank (the shorter response limits the pairs).
      Unpaired positions point at teacher position 0 with mask 0.

    Example:
      >>> out = positional_response_alignment(np.array([[0, 1, 1, 0, 1]]), np.array([[1, 1, 1, 0, 0, 1, 1]]))
      >>> out["uld_teacher_index"].tolist(), out["uld_mask"].tolist()
      ([[0, 0, 1, 0, 5]], [[0.0, 1.0, 1.0, 0.0, 1.0]])
    """
    batch, length = loss_mask_BxS.shape
    index_BxS = np.zeros((batch, length), np.int32)
    mask_BxS = np.zeros((batch, length), np.float32)
    for row in range(batch):
        for student_positions, teacher_positions in zip(_runs(loss_mask_BxS[row] > 0),
                                                        _runs(teacher_loss_mask_BxT[row] > 0)):
            pairs = min(len(student_positions), len(teacher_positions))
            index_BxS[row, student_positions[:pairs]] = teacher_positions[:pairs]
            mask_BxS[row, student_positions[:pairs]] = 1.0
    return {"uld_teacher_index": index_BxS, "uld_mask": mask_BxS}


def _runs(mask: np.ndarray) -> list[np.ndarray]:
    """The positions of each run of True in ``mask``, in order."""
    positions = np.flatnonzero(mask)
    if not len(positions):
        return []
    return np.split(positions, np.flatnonzero(np.diff(positions) > 1) + 1)
