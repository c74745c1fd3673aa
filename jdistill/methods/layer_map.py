"""Which student layer is matched with which teacher layer (feature- and relation-based KD).

Layers are named by their index into the decoder's ``all_hidden_states``
(``output_hidden_states=True``, ``[L + 1, B, T, d]``): 0 is the embedding
output, ``i`` in ``1..L-1`` the output of block ``i - 1`` and ``L`` the last
hidden state after the final norm (what the LM head reads). ``method.layer_map``:

* ``'uniform'``: student layer ``i`` (``1..L_s``) ↔ teacher layer
  ``round(i · L_t / L_s)`` — evenly spread, the last layers paired;
* ``'last'``: only ``(L_s, L_t)``;
* ``'S:T,S:T,...'``: explicit pairs, e.g. ``'1:2,2:4'``.

Attention transfer uses the blocks behind the mapped hidden states: pair
``(s, t)`` with ``s, t >= 1`` gives the attention of student block ``s - 1``
and teacher block ``t - 1`` (:func:`attention_pairs`).
"""

from __future__ import annotations


def layer_pairs(spec: str, student_layers: int, teacher_layers: int) -> tuple[tuple[int, int], ...]:
    """The ``(student, teacher)`` hidden-state index pairs of ``spec`` (see the module docstring)."""
    if student_layers < 1 or teacher_layers < 1:
        raise ValueError(f"layer_pairs: models need at least one layer, got {student_layers} and {teacher_layers}.")
    if spec == "uniform":
        return tuple(
            (i, max(1, (2 * i * teacher_layers + student_layers) // (2 * student_layers)))
            for i in range(1, student_layers + 1)
        )
    if spec == "last":
        return ((student_layers, teacher_layers),)
    pairs = []
    for part in spec.split(","):
        pieces = part.strip().split(":")
        try:
            s, t = (int(p) for p in pieces)
        except ValueError:
            raise ValueError(
                f"method.layer_map {spec!r}: expected 'uniform', 'last' or pairs 'S:T,S:T' of hidden-state "
                "indices (0 = embeddings, L = last hidden state)."
            ) from None
        if not (0 <= s <= student_layers and 0 <= t <= teacher_layers):
            raise ValueError(
                f"method.layer_map pair {s}:{t} is out of range: the student has hidden states 0..{student_layers}, "
                f"the teacher 0..{teacher_layers}."
            )
        pairs.append((s, t))
    if not pairs:
        raise ValueError("method.layer_map names no layer pair.")
    return tuple(pairs)


def attention_pairs(pairs) -> tuple[tuple[int, int], ...]:
    """``(student block, teacher block)`` pairs behind the hidden-state pairs (embedding pairs dropped)."""
    return tuple((s - 1, t - 1) for s, t in pairs if s >= 1 and t >= 1)
