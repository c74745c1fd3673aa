"""The one stop policy: override, else tokenizer EOS ∪ generation_config.json ∪ model config, in order."""

import json
import types

import pytest

from jdistill.sampling import StopTokens, StopTokensError, stop_tokens
from jdistill.sampling.stop_policy import generation_config_eos_ids


def tokenizer(eos=None, pad=None):
    return types.SimpleNamespace(eos_token_id=eos, pad_token_id=pad)


def model_config(eos=None):
    return types.SimpleNamespace(eos_token_id=eos)


@pytest.fixture
def chat_dir(tmp_path):
    """A checkpoint whose generation_config.json lists EOS 2 and the end-of-turn id 32."""
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 32], "do_sample": True}))
    return tmp_path


def test_union_in_order_without_repeats(chat_dir):
    stop = stop_tokens(tokenizer(eos=2, pad=0), chat_dir, model_config(eos=(40, 2)))
    assert stop == StopTokens(eos_ids=(2, 32, 40), pad_id=0)  # tokenizer, generation config, model config
    stop = stop_tokens(tokenizer(eos=7, pad=0), chat_dir, model_config(eos=32))
    assert stop.eos_ids == (7, 2, 32)


def test_generation_config_with_one_id_or_none(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 5}))
    assert generation_config_eos_ids(tmp_path) == (5,)
    assert stop_tokens(tokenizer(eos=2, pad=0), tmp_path, model_config()).eos_ids == (2, 5)
    (tmp_path / "generation_config.json").write_text(json.dumps({"temperature": 0.6}))
    assert generation_config_eos_ids(tmp_path) == ()
    assert generation_config_eos_ids(tmp_path / "missing") == () and generation_config_eos_ids(None) == ()
    (tmp_path / "generation_config.json").write_text("{not json")
    with pytest.raises(StopTokensError, match="generation_config.json is not valid JSON"):
        stop_tokens(tokenizer(eos=2), tmp_path, model_config())


def test_override_wins(chat_dir):
    stop = stop_tokens(tokenizer(eos=2, pad=0), chat_dir, model_config(eos=40), override=[9, 11])
    assert stop == StopTokens((9, 11), 0)
    assert stop_tokens(tokenizer(eos=2), chat_dir, model_config(), override=(9,)) == StopTokens((9,), 9)


def test_pad_is_the_tokenizers_else_the_first_stop_id(chat_dir):
    assert stop_tokens(tokenizer(eos=2, pad=0), chat_dir, None).pad_id == 0
    assert stop_tokens(tokenizer(eos=None, pad=None), chat_dir, None) == StopTokens((2, 32), 2)


def test_no_stop_id_anywhere_is_an_error_naming_the_setting(tmp_path):
    with pytest.raises(StopTokensError, match=r"define no EOS token; set --config\.generation\.eos_ids="):
        stop_tokens(tokenizer(), tmp_path, model_config(), setting="generation.eos_ids")
    with pytest.raises(StopTokensError, match="give the tokenizer an eos_token"):
        stop_tokens(tokenizer(), None, None)


def test_ended_means_the_last_id_is_a_stop_id():
    stop = StopTokens((2, 32), 0)
    assert stop.ended([5, 32]) and stop.ended([2])
    assert not stop.ended([32, 5]) and not stop.ended([])
