"""Greedy decoding equals transformers ``generate(do_sample=False)`` token for token.

For every model family, on random tiny checkpoints (float32, eager attention)
with left-padded prompt batches.
"""

import numpy as np
import pytest
import torch

import jdistill.models as jm
from jdistill.sampling import generate
from tests.models.hf_cases import VOCAB

NEW = 10
PAD = 0
# One case per family runs by default; the other cases cover rope variants.
FAMILY_CASES = ["llama_gqa_bias", "mistral_sliding_window", "qwen2_tied", "qwen3_qk_norm", "gpt2", "gemma2", "gemma3"]
EXTRA_CASES = ["llama3_rope_scaling", "llama_linear_rope"]


def left_padded_prompts():
    """``[4, 12]``: rows with 12, 7, 3 and 10 real tokens (ids avoid PAD and EOS=2)."""
    rng = np.random.default_rng(0)
    ids = rng.integers(3, VOCAB, size=(4, 12)).astype(np.int64)
    mask = np.ones((4, 12), np.int64)
    mask[1, :5] = 0
    mask[2, :9] = 0
    mask[3, :2] = 0
    return np.where(mask == 1, ids, PAD), mask


def hf_greedy(model, ids, mask, eos_token_id):
    with torch.no_grad():
        out = model.generate(
            torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            do_sample=False,
            max_new_tokens=NEW,
            pad_token_id=PAD,
            eos_token_id=eos_token_id,
        )
    return out[:, ids.shape[1]:].numpy()


def assert_same_tokens(ours, theirs):
    """transformers stops early when every row has ended; jdistill pads to ``NEW``."""
    ours = np.asarray(ours.tokens)
    width = theirs.shape[1]
    np.testing.assert_array_equal(ours[:, :width], theirs)
    np.testing.assert_array_equal(ours[:, width:], PAD)


@pytest.mark.parametrize(
    "case", FAMILY_CASES + [pytest.param(c, marks=pytest.mark.slow) for c in EXTRA_CASES]
)
def test_greedy_matches_transformers(case, hf_checkpoint):
    directory, hf_model = hf_checkpoint(case)
    ids, mask = left_padded_prompts()
    model = jm.load_pretrained(directory)
    # EOS: the configs' id 2, plus the token the longest row emits third, so
    # that rows end at different steps.
    free = generate(model, ids, mask, max_new_tokens=NEW, temperature=0.0, eos_ids=(), pad_id=PAD)
    np.testing.assert_array_equal(free.tokens, hf_greedy(hf_model, ids, mask, eos_token_id=[]))
    eos = [2, int(np.asarray(free.tokens)[0, 2])]
    ours = generate(model, ids, mask, max_new_tokens=NEW, temperature=0.0, eos_ids=eos, pad_id=PAD)
    assert_same_tokens(ours, hf_greedy(hf_model, ids, mask, eos_token_id=eos))
    assert int(ours.lengths[0]) <= 3


@pytest.mark.parametrize("case", ["gemma2", "gemma3"])
def test_logprobs_match_transformers_soft_capped_logits(case, hf_checkpoint):
    """The sampler's log-probabilities come from the soft-capped logits (greedy tokens alone cannot tell)."""
    directory, hf_model = hf_checkpoint(case)
    ids, mask = left_padded_prompts()
    model = jm.load_pretrained(directory)
    assert model.config.final_logit_softcap is not None
    ours = generate(model, ids, mask, max_new_tokens=NEW, temperature=0.0, eos_ids=(), pad_id=PAD)
    with torch.no_grad():
        out = hf_model.generate(
            torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False, max_new_tokens=NEW,
            pad_token_id=PAD, eos_token_id=[], output_logits=True, return_dict_in_generate=True,
        )
    logits = torch.stack(out.logits, dim=1)  # [B, N, V], the model's (capped) logits
    want = torch.log_softmax(logits, -1).gather(-1, out.sequences[:, ids.shape[1]:, None])[..., 0].numpy()
    np.testing.assert_array_equal(ours.tokens, out.sequences[:, ids.shape[1]:].numpy())
    np.testing.assert_allclose(np.asarray(ours.logprobs), want, atol=1e-4, rtol=0)
