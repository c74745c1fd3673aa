"""Records → text → tokens → batches, with hand-checked values and the promised errors and skips."""

import numpy as np
import pytest

from jdistill import data
from jdistill.data.records import DataError
from tests.engine import tiny_setup


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = ["what is 1 plus 2 ?", "it is 3 .", "a b c d e f g h"]
    return tiny_setup.make_tokenizer(tmp_path_factory.mktemp("tok"), texts)


def test_formats_are_detected_and_rendered(tokenizer):
    dolly = [{"instruction": "say hi", "context": "", "response": "hi"},
             {"instruction": "say hi", "context": "to bob", "response": "hi bob"}]
    examples, skips = data.to_text_examples(dolly)
    assert skips.total == 0
    assert examples[0].prompt.endswith("### Instruction:\nsay hi\n\n### Response:\n")
    assert "### Input:\nto bob" in examples[1].prompt
    pr = [{"prompt": "p", "response": "r"}]
    examples, _ = data.to_text_examples(pr, prompt_template="Q: {prompt}\nA: ")
    assert examples[0].prompt == "Q: p\nA: " and examples[0].response == "r"


def test_bad_records_are_counted_or_raise():
    records = [
        {"prompt": "ok", "response": "fine"},
        {"prompt": "no response"},
        {"prompt": "", "response": "x"},
        {"prompt": "p", "response": "   "},
        {"prompt": 3, "response": "x"},
    ]
    examples, skips = data.to_text_examples(records, fmt="prompt_response")
    assert len(examples) == 1
    assert skips.counts == {"missing field 'response'": 1, "empty prompt": 1, "empty response": 1,
                            "field 'prompt' is not a string": 1}
    assert "4 records skipped" in skips.summary()
    with pytest.raises(DataError, match="Record 1: missing field 'response'.*on_bad_record=skip"):
        data.to_text_examples(records, fmt="prompt_response", on_bad_record="error")
    with pytest.raises(DataError, match="Cannot tell the record format from the fields \\['question'\\]"):
        data.to_text_examples([{"question": "q"}])


def test_messages_need_a_chat_template(tokenizer):
    with pytest.raises(DataError, match="chat template"):
        data.to_text_examples([{"messages": [{"role": "user", "content": "hi"}]}], tokenizer=tokenizer)


def test_tokenize_masks_the_prompt_and_appends_eos(tokenizer):
    ex = data.TextExample("0", "what is 1 plus 2 ?", "it is 3 .")
    (tok,), stats = data.tokenize_examples([ex], tokenizer, max_len=16, max_prompt_len=8)
    prompt = tokenizer("what is 1 plus 2 ?")["input_ids"]  # <s> + 6 words
    response = tokenizer("it is 3 .", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert tok.student.ids.tolist() == prompt + response
    assert tok.student.prompt_len == len(prompt) == 7
    assert stats.truncated == 0

    batch = data.collate([tok], buckets=(8, 16), pad_id=tokenizer.pad_token_id)
    assert batch["input_ids"].shape == (1, 16)  # 12 tokens -> bucket 16
    # Positions 6..10 predict the response tokens 7..11 (EOS included).
    np.testing.assert_array_equal(np.nonzero(batch["loss_mask"][0])[0], np.arange(6, 11))
    np.testing.assert_array_equal(batch["targets"][0, 6:11], response)
    assert batch["attention_mask"][0].sum() == 12


def test_truncation_policies_count(tokenizer):
    long_prompt = " ".join(["a"] * 10)
    ex = [data.TextExample("0", long_prompt, "b c d e f"), data.TextExample("1", "a", "b")]
    kept, stats = data.tokenize_examples(ex, tokenizer, max_len=10, max_prompt_len=6, policy="truncate")
    assert len(kept) == 2 and stats.truncated == 1
    assert kept[0].student.prompt_len == 6 and len(kept[0].student.ids) == 10
    kept, stats = data.tokenize_examples(ex, tokenizer, max_len=10, max_prompt_len=6, policy="drop")
    assert [k.id for k in kept] == ["1"] and stats.skips.counts == {"too long (truncation=drop)": 1}


def test_batches_are_deterministic_and_resumable(tokenizer):
    ex = [data.TextExample(str(i), "a b", " ".join(["c"] * (1 + i % 5))) for i in range(10)]
    toks, _ = data.tokenize_examples(ex, tokenizer, max_len=16, max_prompt_len=8)
    src = data.BatchSource(toks, batch_size=4, seed=3, buckets=(8, 16), pad_id=0)
    assert src.steps_per_epoch == 2 and src.examples_unused_per_epoch == 2
    it = src.iterate(data.DataPosition())
    seen = [next(it) for _ in range(5)]
    assert [p for p, _ in seen] == [data.DataPosition(0, 0), data.DataPosition(0, 1), data.DataPosition(1, 0),
                                    data.DataPosition(1, 1), data.DataPosition(2, 0)]
    # Rebuilding from a position gives the same batch; epochs are different permutations.
    np.testing.assert_array_equal(src.batch_at(data.DataPosition(1, 1))["input_ids"], seen[3][1]["input_ids"])
    assert not np.array_equal(src.order(0), src.order(1))
    again = data.BatchSource(toks, batch_size=4, seed=3, buckets=(8, 16), pad_id=0)
    np.testing.assert_array_equal(again.order(5), src.order(5))
    with pytest.raises(DataError, match="Only 10 usable training examples for a batch of 16"):
        data.BatchSource(toks, batch_size=16, seed=0, buckets=(16,), pad_id=0)


def test_extras_are_collated_per_position_and_zero_padded():
    side = lambda n, p: data.TokenizedSide(np.arange(1, n + 1, dtype=np.int32), p)  # noqa: E731
    a = data.TokenizedExample("a", side(3, 1), extras={"w": np.array([1.0, 2.0, 3.0], np.float32),
                                                       "k": np.arange(6, dtype=np.int32).reshape(3, 2)})
    b = data.TokenizedExample("b", side(2, 1), extras={"w": np.array([4.0, 5.0], np.float32),
                                                       "k": np.full((2, 2), 7, np.int32)})
    batch = data.collate([a, b, None], buckets=(4,), pad_id=0)
    np.testing.assert_array_equal(batch["w"], [[1, 2, 3, 0], [4, 5, 0, 0], [0, 0, 0, 0]])
    assert batch["k"].shape == (3, 4, 2) and batch["k"].dtype == np.int32
    np.testing.assert_array_equal(batch["k"][0, :3], [[0, 1], [2, 3], [4, 5]])
    np.testing.assert_array_equal(batch["k"][1], [[7, 7], [7, 7], [0, 0], [0, 0]])
    bad = data.TokenizedExample("c", side(2, 1), extras={"w": np.zeros(5, np.float32), "k": np.zeros((2, 2))})
    with pytest.raises(DataError, match="one row per student token"):
        data.collate([a, bad], buckets=(8,), pad_id=0)
