"""Records -> prompts: formats, templates, chat rendering and counted skips."""

import pytest

from jdistill.data.prompts import PromptOptions, detect_prompt_format, to_prompts
from jdistill.data.records import DOLLY_TEMPLATE, DOLLY_TEMPLATE_WITH_CONTEXT, DataError
from tests.teacher_data.conftest import CHAT_TEMPLATE, build_tokenizer


@pytest.fixture(scope="module")
def plain_tokenizer():
    return build_tokenizer(None)


@pytest.fixture(scope="module")
def chat_tokenizer():
    return build_tokenizer(CHAT_TEMPLATE)


def test_prompt_records_with_ids_and_counted_skips(plain_tokenizer):
    records = [
        {"id": "a", "prompt": "what is the capital of france ?", "response": "paris"},
        {"prompt": "explain why the sky is blue ."},  # no id: its index
        {"id": "c", "prompt": "   "},
        {"id": "d"},
        {"id": "a", "prompt": "duplicate"},
        {"id": "f", "prompt": 7},
    ]
    prompts, skips = to_prompts(records, plain_tokenizer)
    assert [(p.id, p.prompt, p.text, p.rendered) for p in prompts] == [
        ("a", records[0]["prompt"], records[0]["prompt"], False),
        ("1", records[1]["prompt"], records[1]["prompt"], False),
    ]
    assert skips.total == 4
    assert skips.counts["empty prompt"] == 1
    assert skips.counts["duplicate id"] == 1
    assert skips.counts["missing or non-string 'prompt'"] == 2
    assert "4 records skipped" in skips.summary()


def test_dolly_records_use_the_papers_templates(plain_tokenizer):
    records = [
        {"instruction": "write a poem", "context": "", "response": "..."},
        {"instruction": "summarise", "context": "the sea is blue"},
        {"instruction": ""},
    ]
    prompts, skips = to_prompts(records, plain_tokenizer)
    assert prompts[0].text == DOLLY_TEMPLATE.format(instruction="write a poem")
    assert prompts[1].text == DOLLY_TEMPLATE_WITH_CONTEXT.format(
        instruction="summarise", context="the sea is blue"
    )
    assert skips.counts == {"empty instruction": 1}
    custom = PromptOptions(prompt_template="Q: {instruction} ({context})")
    assert to_prompts(records[1:2], plain_tokenizer, custom)[0][0].text == "Q: summarise (the sea is blue)"


def test_chain_of_thought_and_chat_template(chat_tokenizer):
    records = [{"id": "x", "prompt": "how many legs does a spider have ?"}]
    options = PromptOptions(cot_template="{prompt} think step by step and answer .")
    (prompt,), _ = to_prompts(records, chat_tokenizer, options)
    assert prompt.rendered
    assert prompt.text == (
        "< user > how many legs does a spider have ? think step by step and answer . < assistant >"
    )
    assert prompt.prompt == records[0]["prompt"]  # stored without the CoT template
    (kept,), _ = to_prompts(records, chat_tokenizer, PromptOptions(
        cot_template=options.cot_template, keep_cot_in_prompt=True))
    assert kept.prompt.endswith("think step by step and answer .")
    (plain,), _ = to_prompts(records, chat_tokenizer, PromptOptions(chat_template="off"))
    assert not plain.rendered and plain.text == records[0]["prompt"]


def test_messages_drop_the_last_assistant_turn(chat_tokenizer, plain_tokenizer):
    records = [
        {"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "what is the capital of france ?"},
            {"role": "assistant", "content": "paris"},
        ]},
        {"messages": [{"role": "assistant", "content": "hello"}]},
        {"messages": "not a list"},
    ]
    prompts, skips = to_prompts(records, chat_tokenizer)
    assert len(prompts) == 1
    assert prompts[0].prompt == records[0]["messages"][:2]
    assert prompts[0].text == "< system > be brief < user > what is the capital of france ? < assistant >"
    assert skips.total == 2
    with pytest.raises(DataError, match="chat template"):
        to_prompts(records, plain_tokenizer)


def test_format_detection_and_option_errors():
    assert detect_prompt_format({"messages": []}) == "messages"
    assert detect_prompt_format({"question": "?"}, prompt_field="question") == "prompt_response"
    assert detect_prompt_format({"instruction": "x", "context": ""}) == "dolly"
    with pytest.raises(DataError, match="prompt_field"):
        detect_prompt_format({"text": "x"})
    with pytest.raises(DataError, match="data.format"):
        PromptOptions(fmt="alpaca")
    with pytest.raises(DataError, match="cot_template"):
        PromptOptions(cot_template="think step by step")
    with pytest.raises(DataError, match="chat_template"):
        PromptOptions(chat_template="yes")
