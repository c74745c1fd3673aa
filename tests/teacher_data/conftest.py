"""A tiny teacher directory (random llama + a locally trained tokenizer) and prompt files.

Nothing is downloaded: the tokenizer is a WordLevel model trained on the
sentences below with the ``tokenizers`` library.
"""

import json

import pytest

SENTENCES = [
    "what is the capital of france ?",
    "explain why the sky is blue .",
    "write a short poem about the sea .",
    "how many legs does a spider have ?",
    "give three reasons to learn math .",
    "the answer is a number between one and ten .",
    "think step by step and answer .",
    "< user > < assistant > < system >",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}< {{ m['role'] }} > {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}< assistant >{% endif %}"
)


def build_tokenizer(chat_template: str | None):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[EOS]"])
    tokenizer.train_from_iterator(SENTENCES, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]"
    )
    if chat_template is not None:
        wrapped.chat_template = chat_template
    return wrapped


def build_teacher(directory, chat_template: str | None):
    import torch
    import transformers

    tokenizer = build_tokenizer(chat_template)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        initializer_range=0.2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    assert len(tokenizer) <= config.vocab_size
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory):
    """A teacher without a chat template."""
    return str(build_teacher(tmp_path_factory.mktemp("teacher"), None))


@pytest.fixture(scope="session")
def chat_teacher_dir(tmp_path_factory):
    """The same kind of teacher, with a chat template."""
    return str(build_teacher(tmp_path_factory.mktemp("chat_teacher"), CHAT_TEMPLATE))


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return str(path)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]
