"""Decoders whose next-token logits are a script: a row of a table picked by the position or the last token.

``ScriptedDecoder(table_SxV, by="position")`` returns ``table[s]`` as the
logits after ``s`` generated tokens (the prefill's last prompt token gives
``table[0]``); ``by="token"`` returns ``table[last token id]``. The hidden
state is the one-hot of that index and the head is the table, so
``next_token_logits`` reads exactly the scripted row. The cache is the number
of tokens fed so far.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class ScriptConfig:
    vocab_size: int
    dtype: str = "float32"
    final_logit_softcap: float | None = None
    eos_token_id: int | None = None
    pad_token_id: int = 0


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ScriptOutput:
    hidden_states: jax.Array
    cache: jax.Array


class ScriptedDecoder(nnx.Module):
    def __init__(self, table_SxV, *, by: str, prompt_width: int):
        self.table = nnx.Param(jnp.asarray(table_SxV, jnp.float32))
        self.config = ScriptConfig(vocab_size=int(table_SxV.shape[1]))
        self.by, self.prompt_width = by, prompt_width

    def init_cache(self, batch_size, max_len, dtype=None):
        del max_len, dtype
        return jnp.zeros((batch_size,), jnp.int32)

    def unstacked_block_states(self):
        return []

    def lm_head_weight(self):
        return self.table[...]

    def __call__(self, ids_BxT, mask_BxT, *, cache, return_logits=False, block_states=None):
        del mask_BxT, return_logits, block_states
        rows = self.table.shape[0]
        fed = cache[:, None] + jnp.arange(ids_BxT.shape[1])[None, :] + 1  # tokens fed including this one
        if self.by == "position":
            index = jnp.clip(fed - self.prompt_width, 0, rows - 1)  # generated tokens before the next one
        else:
            index = jnp.clip(ids_BxT, 0, rows - 1)
        return ScriptOutput(jax.nn.one_hot(index, rows, dtype=jnp.float32), cache + ids_BxT.shape[1])
