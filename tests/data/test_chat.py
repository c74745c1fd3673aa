"""Chat records train on every assistant turn: the exact tokens and loss mask of multi-turn conversations,
checked against a hand-written expectation and against transformers' own assistant mask
(``return_assistant_tokens_mask`` on the same template with ``{% generation %}`` tags)."""

import numpy as np
import pytest
import tokenizers
import transformers

from jdistill import data
from jdistill.data import alignment, chat
from tests.engine import tiny_setup

# A ChatML-like template: every turn ends with <|end|> and a newline (the newline is not trained on).
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
# The same rendering, with the assistant tokens marked for transformers' assistant mask.
TAGGED = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}"
    "<|assistant|> {% generation %}{{ m['content'] }} <|end|>{% endgeneration %}{{ '\\n' }}"
    "{% else %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
# The teacher's own template (cross-vocabulary): another header, another end of turn, no newline.
TEACHER_TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} <eot> {% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)
MARKERS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "[system]", "[user]", "[assistant]", "<eot>"]

CONVERSATION = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "what is 1 plus 2 ?"},
    {"role": "assistant", "content": "it is 3 ."},
    {"role": "user", "content": "what is 2 plus 2 ?"},
    {"role": "assistant", "content": "it is 4 ."},
]
TEXTS = ["be brief what is 1 plus 2 ? it is 3 . 4"]


def chat_tokenizer(directory, template, *, keep_newlines=True, texts=TEXTS):
    """tiny_setup's word-level tokenizer plus a chat template; with ``keep_newlines`` "\\n" is a token."""
    tokenizer = tiny_setup.make_tokenizer(directory, texts, extra_words=MARKERS)
    if keep_newlines:
        vocab = dict(tokenizer.get_vocab())
        vocab["\n"] = len(vocab)
        backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
        backend.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
            tokenizers.pre_tokenizers.Split(" ", behavior="removed"),
            tokenizers.pre_tokenizers.Split("\n", behavior="isolated"),
        ])
        tokenizer = transformers.PreTrainedTokenizerFast(
            tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
        )
    tokenizer.chat_template = template
    return tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return chat_tokenizer(tmp_path_factory.mktemp("chat"), TEMPLATE)


def words(tokenizer, ids):
    return tokenizer.convert_ids_to_tokens([int(i) for i in ids])


TURN_1 = ["it", "is", "3", ".", "<|end|>"]
TURN_2 = ["it", "is", "4", ".", "<|end|>"]


def test_every_assistant_turn_is_trained_with_its_end_of_turn_and_nothing_else(tokenizer):
    ids, spans = chat.chat_tokens(tokenizer, CONVERSATION)
    expected = ("<|system|> be brief <|end|> \n <|user|> what is 1 plus 2 ? <|end|> \n <|assistant|> it is 3 . "
                "<|end|> \n <|user|> what is 2 plus 2 ? <|end|> \n <|assistant|> it is 4 . <|end|>").split(" ")
    assert words(tokenizer, ids) == expected  # the template's newline after the last turn is dropped
    assert [words(tokenizer, ids[a:b]) for a, b in spans] == [TURN_1, TURN_2]
    assert spans == ((15, 20), (31, 36))

    # Through the data pipeline: the prompt is the conversation up to the last assistant header, the generation
    # prompt of the same template; the loss mask covers exactly the two turns.
    examples, skips = data.to_text_examples([{"messages": CONVERSATION}], tokenizer=tokenizer)
    assert skips.total == 0 and examples[0].response == "it is 4 ."
    (example,), _ = data.tokenize_examples(examples, tokenizer, max_len=64, max_prompt_len=40)
    side = example.student
    assert side.ids.tolist() == ids.tolist() and side.spans == spans and side.prompt_len == 31
    generation_prompt = tokenizer(
        tokenizer.apply_chat_template(CONVERSATION[:-1], tokenize=False, add_generation_prompt=True),
        add_special_tokens=False)["input_ids"]
    assert side.ids[: side.prompt_len].tolist() == generation_prompt
    batch = data.collate([example], buckets=(64,), pad_id=tokenizer.pad_token_id)
    trained = np.flatnonzero(batch["loss_mask"][0])
    assert trained.tolist() == list(range(14, 19)) + list(range(30, 35))
    assert words(tokenizer, batch["targets"][0, trained]) == TURN_1 + TURN_2


def test_prefix_rendering_matches_transformers_assistant_mask(tmp_path):
    """transformers' ``return_assistant_tokens_mask`` on the tagged template is an independent reference."""
    plain = chat_tokenizer(tmp_path / "plain", TEMPLATE)
    tagged = chat_tokenizer(tmp_path / "tagged", TAGGED)
    conversations = [CONVERSATION, CONVERSATION[1:3], CONVERSATION[1:] + [
        {"role": "user", "content": "be brief"}, {"role": "assistant", "content": ""}]]
    for conversation in conversations:
        reference = tagged.apply_chat_template(conversation, tokenize=True, return_dict=True,
                                               return_assistant_tokens_mask=True)
        ids, spans = chat.chat_tokens(plain, conversation)
        mask = np.zeros(len(ids), bool)
        for a, b in spans:
            mask[a:b] = True
        n = len(ids)
        assert ids.tolist() == reference["input_ids"][:n]
        assert mask.tolist() == [bool(m) for m in reference["assistant_masks"][:n]]
        assert not any(reference["assistant_masks"][n:])  # only the final newline follows
        # The tagged template itself takes transformers' mask.
        tagged_ids, tagged_spans = chat.chat_tokens(tagged, conversation)
        assert chat.has_generation_tags(tagged) and not chat.has_generation_tags(plain)
        assert tagged_ids.tolist() == ids.tolist() and tagged_spans == spans


def test_a_long_conversation_keeps_the_end_of_its_prompt(tokenizer):
    (text,), _ = data.to_text_examples([{"messages": CONVERSATION}], tokenizer=tokenizer)
    (example,), stats = data.tokenize_examples([text], tokenizer, max_len=20, max_prompt_len=16)
    side = example.student
    # 31 prompt tokens cut to their last 16 (the first turn loses its first token), then 20 tokens in all.
    assert stats.truncated == 1 and side.prompt_len == 16 and len(side.ids) == 20
    assert [words(tokenizer, side.ids[a:b]) for a, b in side.trained_spans] == [TURN_1[1:], TURN_2[:4]]
    dropped, stats = data.tokenize_examples([text], tokenizer, max_len=20, max_prompt_len=16, policy="drop")
    assert not dropped and stats.skips.counts == {"too long (truncation=drop)": 1}


def test_a_cut_conversation_keeps_its_bos(tmp_path):
    tokenizer = chat_tokenizer(tmp_path, "{{ bos_token }} " + TEMPLATE)
    (text,), _ = data.to_text_examples([{"messages": CONVERSATION}], tokenizer=tokenizer)
    (example,), _ = data.tokenize_examples([text], tokenizer, max_len=20, max_prompt_len=16)
    side = example.student
    # 32 prompt tokens (BOS first) keep the BOS and their last 15: the first turn loses its first token.
    assert side.ids[0] == tokenizer.bos_token_id and side.prompt_len == 16 and len(side.ids) == 20
    assert words(tokenizer, side.ids[:2]) == ["<s>", "is"]
    assert [words(tokenizer, side.ids[a:b]) for a, b in side.trained_spans] == [TURN_1[1:], TURN_2[:4]]


def test_cross_vocabulary_sides_use_their_own_templates(tokenizer, tmp_path):
    texts = [" ".join(m["content"] for m in CONVERSATION)]
    teacher = tiny_setup.make_tokenizer_b(tmp_path / "b", texts + [" ".join(MARKERS)])
    teacher.chat_template = TEACHER_TEMPLATE
    (text,), _ = data.to_text_examples([{"messages": CONVERSATION}], tokenizer=tokenizer)
    (example,), _ = data.tokenize_examples([text], tokenizer, max_len=64, max_prompt_len=40, teacher_tokenizer=teacher)
    t = example.teacher
    assert [words(teacher, t.ids[a:b]) for a, b in t.trained_spans] == [
        ["it", "is", "3", ".", "<eot>"], ["it", "is", "4", ".", "<eot>"]]
    assert words(teacher, t.ids[t.prompt_len - 2 : t.prompt_len]) == ["<eot>", "[assistant]"]
    batch = data.collate([example], buckets=(64,), pad_id=tokenizer.pad_token_id, teacher_buckets=(64,),
                         teacher_pad_id=teacher.pad_token_id)
    # ULD's positional pairing goes turn by turn: each student response position meets its turn's teacher position.
    s_pos = np.flatnonzero(batch["uld_mask"][0])
    t_pos = batch["uld_teacher_index"][0, s_pos]
    assert words(tokenizer, batch["targets"][0, s_pos])[:4] == words(teacher, batch["teacher_targets"][0, t_pos])[:4]
    assert words(teacher, batch["teacher_targets"][0, t_pos]) == ["it", "is", "3", ".", "<eot>", "it", "is", "4", ".",
                                                                  "<eot>"]


def test_turns_pair_within_their_own_run():
    student = np.array([[0, 1, 1, 0, 0, 1, 1, 1]])
    teacher = np.array([[1, 1, 1, 0, 1, 1, 0, 0]])  # turn 1 has 3 teacher tokens, turn 2 has 2
    out = alignment.positional_response_alignment(student, teacher)
    assert out["uld_teacher_index"].tolist() == [[0, 0, 1, 0, 0, 4, 5, 0]]
    assert out["uld_mask"].tolist() == [[0, 1, 1, 0, 0, 1, 1, 0]]


def test_unusable_conversations_are_counted(tokenizer, tmp_path):
    records = [
        {"messages": [{"role": "assistant", "content": "hi"}]},
        {"messages": [{"role": "user", "content": "what is 1 plus 2 ?"}, {"role": "assistant", "content": " "}]},
        {"messages": CONVERSATION},
    ]
    examples, skips = data.to_text_examples(records, tokenizer=tokenizer)
    assert len(examples) == 1
    assert skips.counts == {"conversation starts with the assistant": 1, "empty response": 1}
    # A template that rewrites earlier turns (here: drops every assistant turn but the last) has no prefix rendering.
    rewriting = chat_tokenizer(tmp_path / "rw", (
        "{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}<|{{ m['role'] }}|> {{ m['content'] }} "
        "<|end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|> {% endif %}"))
    (text,), _ = data.to_text_examples([{"messages": CONVERSATION}], tokenizer=rewriting)
    kept, stats = data.tokenize_examples([text], rewriting, max_len=64, max_prompt_len=40)
    assert not kept and "{% generation %}" in next(iter(stats.skips.counts))
