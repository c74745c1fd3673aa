"""jdistill logits equal transformers logits for every family (fp32, padded batch)."""

import json
import shutil

import numpy as np
import pytest
from tests.models.hf_cases import HF_CASES

import jdistill.models as jm

ATOL = 1e-4


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_logits_match_transformers(case, hf_checkpoint, padded_batch, torch_forward, forward):
    directory, hf_model = hf_checkpoint(case)
    ids, mask = padded_batch
    expected = torch_forward(hf_model, ids, mask).logits.numpy()

    model = jm.load_pretrained(directory)
    got = np.asarray(forward(model, ids, mask).logits)

    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], expected[real], atol=ATOL, rtol=0)


@pytest.mark.parametrize("impl", ["reference", "xla_chunked", "pallas_interpret"])
@pytest.mark.parametrize(
    "case", ["llama_gqa_bias", "mistral_sliding_window", "qwen2_sliding_layers", "gpt2", "gemma2"]
)
def test_every_attention_implementation_matches_transformers(
    case, impl, hf_checkpoint, padded_batch, torch_forward, forward
):
    """The default ('auto', which is 'xla_chunked' on CPU) is covered above; each other one here."""
    directory, hf_model = hf_checkpoint(case)
    ids, mask = padded_batch
    expected = torch_forward(hf_model, ids, mask).logits.numpy()
    model = jm.load_pretrained(directory, attention_impl=impl)
    assert model.config.attention_impl == impl
    got = np.asarray(forward(model, ids, mask).logits)
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], expected[real], atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", ["llama_gqa_bias", "qwen3_qk_norm", "gpt2", "gemma2", "gemma3"])
def test_hidden_states_and_attentions_match_transformers(
    case, hf_checkpoint, padded_batch, torch_forward, forward
):
    directory, hf_model = hf_checkpoint(case)
    ids, mask = padded_batch
    expected = torch_forward(hf_model, ids, mask, output_hidden_states=True, output_attentions=True)
    model = jm.load_pretrained(directory)
    out = forward(model, ids, mask, output_hidden_states=True, output_attentions=True)

    real = mask.astype(bool)
    num_layers = model.config.num_layers
    assert out.all_hidden_states.shape[0] == len(expected.hidden_states) == num_layers + 1
    for got, want in zip(np.asarray(out.all_hidden_states), expected.hidden_states, strict=True):
        np.testing.assert_allclose(got[real], want.numpy()[real], atol=ATOL, rtol=0)
    # The last hidden state is post-final-norm: what feeds the LM head (and then
    # the final-logit soft-cap, if any).
    np.testing.assert_allclose(out.hidden_states, out.all_hidden_states[-1])
    head_logits = out.hidden_states @ model.lm_head_weight()
    cap = model.config.final_logit_softcap
    if cap is not None:
        head_logits = np.tanh(head_logits / cap) * cap
    np.testing.assert_allclose(head_logits, out.logits, atol=1e-5, rtol=0)
    np.testing.assert_allclose(model.logits_from_hidden(out.hidden_states), out.logits, atol=1e-5, rtol=0)
    assert out.attention_probs.shape[0] == num_layers
    for got, want in zip(np.asarray(out.attention_probs), expected.attentions, strict=True):
        # [B, H, T, S]: compare the rows of real query tokens.
        got_q, want_q = got.transpose(0, 2, 1, 3)[real], want.numpy().transpose(0, 2, 1, 3)[real]
        np.testing.assert_allclose(got_q, want_q, atol=ATOL, rtol=0)


def test_sliding_window_is_applied(hf_checkpoint, padded_batch, torch_forward, forward, tmp_path):
    directory, hf_model = hf_checkpoint("mistral_sliding_window")
    ids, mask = padded_batch
    expected = torch_forward(hf_model, ids, mask).logits.numpy()
    assert jm.config_from_hf_dir(directory).sliding_window == 4

    # The same weights without the window must give different logits.
    shutil.copytree(directory, tmp_path, dirs_exist_ok=True)
    hf_config = json.loads((tmp_path / "config.json").read_text())
    hf_config["sliding_window"] = None
    (tmp_path / "config.json").write_text(json.dumps(hf_config))
    unwindowed = jm.load_pretrained(tmp_path)
    assert unwindowed.config.sliding_window is None
    got = np.asarray(forward(unwindowed, ids, mask).logits)
    real = mask.astype(bool)
    assert np.abs(got[real] - expected[real]).max() > 1e-3


@pytest.mark.parametrize("case", ["llama_gqa_bias", "gpt2"])
def test_padded_rows_equal_unpadded_row(case, hf_checkpoint, padded_batch, forward):
    directory, _ = hf_checkpoint(case)
    model = jm.load_pretrained(directory)
    ids, _ = padded_batch
    length, n = ids.shape[1], 7
    tokens = ids[0]
    batch = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    batch[0], mask[0] = tokens, 1  # unpadded
    batch[1, length - n :], mask[1, length - n :] = tokens[:n], 1  # left-padded prefix
    batch[2, :n], mask[2, :n] = tokens[:n], 1  # right-padded prefix
    batch[3, 2 : 2 + n], mask[3, 2 : 2 + n] = tokens[:n], 1  # padded on both sides

    logits = np.asarray(forward(model, batch, mask).logits)
    unpadded = logits[0, :n]  # Causal: the prefix's logits are its unpadded logits.
    np.testing.assert_allclose(logits[1, length - n :], unpadded, atol=1e-5, rtol=0)
    np.testing.assert_allclose(logits[2, :n], unpadded, atol=1e-5, rtol=0)
    np.testing.assert_allclose(logits[3, 2 : 2 + n], unpadded, atol=1e-5, rtol=0)
