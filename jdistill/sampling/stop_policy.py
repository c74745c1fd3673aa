"""The one end-of-response policy: which token ids stop a generated response.

Evaluation, on-policy training and teacher-data generation all stop where the
checkpoint says a turn ends. Chat models list their end-of-turn token
(``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``) in
``generation_config.json``'s ``eos_token_id``, often next to a different
tokenizer EOS; stopping at the tokenizer's EOS alone lets a chat model's
responses run past the end of its turn.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np

GENERATION_CONFIG = "generation_config.json"


class StopTokensError(ValueError):
    """No token can end a response; the message names the setting to change."""


@dataclasses.dataclass(frozen=True)
class StopTokens:
    """The ids that end a response, and the id written after the end.

    Attributes:
        eos_ids: ``E >= 1`` distinct ids; a row stops at the first one it
            emits (that token is kept as the response's last token).
        pad_id: written into prompt padding and after a row's end.
    """

    eos_ids: tuple[int, ...]
    pad_id: int

    def ended(self, ids: Sequence[int]) -> bool:
        """Whether a response (its ids, in order) ended with one of :attr:`eos_ids`."""
        return len(ids) > 0 and int(ids[-1]) in self.eos_ids


def token_ids(value) -> tuple[int, ...]:
    """An id field as a tuple: ``None`` -> ``()``, ``7`` -> ``(7,)``, ``[7, 9]`` -> ``(7, 9)``."""
    if value is None:
        return ()
    if isinstance(value, (int, np.integer)):
        return (int(value),)
    return tuple(int(v) for v in value)


def generation_config_eos_ids(checkpoint_dir: str | os.PathLike | None) -> tuple[int, ...]:
    """``eos_token_id`` of ``checkpoint_dir/generation_config.json`` (an id or a list); ``()`` if absent."""
    if not checkpoint_dir:
        return ()
    path = os.path.join(os.fspath(checkpoint_dir), GENERATION_CONFIG)
    if not os.path.isfile(path):
        return ()
    with open(path, encoding="utf-8") as f:
        try:
            fields = json.load(f)
        except json.JSONDecodeError as error:
            raise StopTokensError(f"{path} is not valid JSON ({error}); fix or remove it.") from error
    return token_ids(fields.get("eos_token_id"))


def stop_tokens(
    tokenizer,
    checkpoint_dir: str | os.PathLike | None,
    model_config,
    override: Sequence[int] = (),
    *,
    setting: str | None = None,
) -> StopTokens:
    """The stop tokens of a checkpoint.

    ``override`` wins when it is not empty. Otherwise the ids are the union, in
    this order and without repeats, of the tokenizer's ``eos_token_id``,
    ``checkpoint_dir/generation_config.json``'s ``eos_token_id`` (an id or a
    list: chat models put their end-of-turn token there) and the model
    config's ``eos_token_id``. The pad id is the tokenizer's pad token, else
    the first stop id.

    Args:
        tokenizer: anything with ``eos_token_id`` and ``pad_token_id``
            attributes (``None`` allowed).
        checkpoint_dir: the model's Hugging Face directory; ``None`` or ``""``
            (a model built in memory) skips ``generation_config.json``.
        model_config: an object with ``eos_token_id`` (a
            ``jdistill.models.DecoderConfig``), or ``None``.
        override: explicit stop ids (a user setting).
        setting: the config key that sets ``override``, named in the error.

    Raises:
        StopTokensError: no source defines a stop id.
    """
    eos_ids = token_ids(override)
    if not eos_ids:
        found = (
            token_ids(getattr(tokenizer, "eos_token_id", None))
            + generation_config_eos_ids(checkpoint_dir)
            + token_ids(getattr(model_config, "eos_token_id", None))
        )
        eos_ids = tuple(dict.fromkeys(found))
    if not eos_ids:
        fix = (f"set --config.{setting}=ID[,ID...]" if setting
               else f"give the tokenizer an eos_token or add eos_token_id to {GENERATION_CONFIG}")
        raise StopTokensError(
            f"Responses could never end: the tokenizer, {GENERATION_CONFIG} and config.json of "
            f"{os.fspath(checkpoint_dir) if checkpoint_dir else 'the model'} define no EOS token; {fix}."
        )
    pad_id = getattr(tokenizer, "pad_token_id", None)
    return StopTokens(eos_ids=eos_ids, pad_id=eos_ids[0] if pad_id is None else int(pad_id))
