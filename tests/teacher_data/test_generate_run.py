"""End to end: the generation entry point on a tiny teacher, with resume and crash recovery."""

import os
import subprocess
import sys

import numpy as np
import pytest

from configs.generate import get_config
from jdistill import teacher_data
from jdistill.data import topk_store
from jdistill.data.records import DataError, load_records, to_text_examples
from jdistill.teacher_data.teacher import load_tokenizer
from tests.teacher_data.conftest import SENTENCES, read_jsonl, write_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPTS = SENTENCES[:7] * 3  # 21 prompts of a few lengths


@pytest.fixture
def prompt_file(tmp_path):
    records = [{"id": f"p{i}", "prompt": text} for i, text in enumerate(PROMPTS)]
    records.append({"id": "empty", "prompt": ""})
    records.append({"id": "long", "prompt": " ".join(SENTENCES * 4)})
    return write_jsonl(tmp_path / "prompts.jsonl", records)


def make_config(teacher, prompts, output, **generation):
    config = get_config()
    config.teacher.path = teacher
    config.teacher.param_dtype = config.teacher.compute_dtype = "float32"
    config.data.prompt_files = prompts
    config.data.max_prompt_len = 16
    config.output.path = output
    config.generation.batch_size = 8  # The 8 test devices split the batch.
    config.generation.max_new_tokens = 12
    for name, value in generation.items():
        config.generation[name] = value
    return config


def test_generates_resumes_and_recovers(teacher_dir, prompt_file, tmp_path):
    output = str(tmp_path / "responses.jsonl")
    first = teacher_data.run(make_config(teacher_dir, prompt_file, output, max_batches=1))
    assert first.written == 8 and first.remaining == len(PROMPTS) - 8
    assert first.skips.counts == {"empty prompt": 1, "prompt longer than data.max_prompt_len=16": 1}

    # A crash mid-write leaves a partial line: it is removed and its batch redone.
    with open(output, "a", encoding="utf-8") as f:
        f.write('{"id": "p20", "prompt": "cut sh')
    second = teacher_data.run(make_config(teacher_dir, prompt_file, output))
    assert second.already_done == 8
    assert second.written == len(PROMPTS) - 8 and second.remaining == 0

    records = read_jsonl(output)
    ids = [r["id"] for r in records]
    assert sorted(ids) == sorted(f"p{i}" for i in range(len(PROMPTS)))  # all, no duplicates
    by_id = {r["id"]: r for r in records}
    for i, text in enumerate(PROMPTS):
        record = by_id[f"p{i}"]
        assert record["prompt"] == text
        assert isinstance(record["response"], str)
        assert record["stop"] in ("eos", "length")
        assert "[EOS]" not in record["response"]
    assert {r["stop"] for r in records} == {"eos", "length"}, "the tiny teacher should do both"

    # A third run has nothing left to do.
    third = teacher_data.run(make_config(teacher_dir, prompt_file, output))
    assert third.written == 0 and third.already_done == len(PROMPTS)

    # The training data reader takes the output as prompt/response records.
    examples, skips = to_text_examples(load_records(output))
    assert len(examples) + skips.total == len(PROMPTS)


def test_top_k_logprobs_and_greedy_determinism(chat_teacher_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "old"}]}
        for text in SENTENCES[:5]
    ])
    outputs, stores = [], []
    for name in ("a", "b"):
        config = make_config(
            chat_teacher_dir, prompts, str(tmp_path / f"{name}.jsonl"), temperature=0.0, num_topk_logprobs=3
        )
        teacher_data.run(config)
        outputs.append(read_jsonl(tmp_path / f"{name}.jsonl"))
        stores.append(topk_store.TopKStore(str(tmp_path / f"{name}.topk")))  # beside the records
    assert outputs[0] == outputs[1]
    tokenizer = load_tokenizer(chat_teacher_dir)
    for record in outputs[0]:
        assert record["messages"][-1] == {"role": "assistant", "content": record["response"]}
        assert record["messages"][0]["role"] == "user" and len(record["messages"]) == 2
        assert set(record) == {"id", "messages", "response", "stop"}  # text only: the top-k are in the store
        entry = stores[0].entry(record["id"])
        targets, ids, logprobs = stores[0].rows(entry)
        np.testing.assert_array_equal(stores[1].rows(stores[1].entry(record["id"]))[1], ids)
        assert len(targets) == len(ids) >= 1 and ids.shape[1] == 3
        assert entry.ended == (record["stop"] == "eos")
        text_ids = targets[:-1] if entry.ended else targets
        assert tokenizer.decode(text_ids.tolist(), skip_special_tokens=True) == record["response"]
        # Greedy: every response token is the teacher's top-1 choice.
        assert ids[:, 0].tolist() == targets.tolist()
        logprobs = np.asarray(logprobs, np.float32)
        assert np.all(np.diff(logprobs, axis=1) <= 0) and np.all(logprobs <= 0)
        # The prompt the teacher answered: its chat rendering.
        prompt = tokenizer.apply_chat_template(record["messages"][:1], tokenize=False, add_generation_prompt=True)
        assert entry.prompt_hash == topk_store.token_hash(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def test_top_k_store_and_records_stay_consistent_across_a_crash(teacher_dir, prompt_file, tmp_path):
    output = str(tmp_path / "r.jsonl")
    config = make_config(teacher_dir, prompt_file, output, num_topk_logprobs=2, max_batches=2)
    config.output.topk_shard_tokens = 1  # one shard per batch
    teacher_data.run(config)
    assert topk_store.TopKStore(str(tmp_path / "r.topk")).ids() == {r["id"] for r in read_jsonl(output)}
    # A crash after a shard was committed but before its records reached the JSONL.
    lines = open(output, encoding="utf-8").read().splitlines(keepends=True)
    with open(output, "w", encoding="utf-8") as f:
        f.writelines(lines[:8])
    config = make_config(teacher_dir, prompt_file, output, num_topk_logprobs=2)
    teacher_data.run(config)
    records = read_jsonl(output)
    store = topk_store.TopKStore(str(tmp_path / "r.topk"))
    assert len(records) == len(PROMPTS) and store.ids() == {r["id"] for r in records}
    assert store.manifest["bytes_per_token_arrays"] == 3 * 2 + 2 * 2


def test_configuration_errors(teacher_dir, prompt_file, tmp_path):
    output = str(tmp_path / "out.jsonl")
    config = make_config("", prompt_file, output)
    with pytest.raises(teacher_data.TeacherConfigError, match="teacher.path"):
        teacher_data.run(config)
    config = make_config(teacher_dir, "", output)
    with pytest.raises(DataError, match="prompt_files"):
        teacher_data.run(config)
    config = make_config(teacher_dir, prompt_file, output, batch_size=6)
    with pytest.raises(teacher_data.TeacherConfigError, match="multiple of the 8 batch shards"):
        teacher_data.run(config)


@pytest.mark.slow
def test_command_line(teacher_dir, prompt_file, tmp_path):
    output = tmp_path / "cli.jsonl"
    command = [
        sys.executable, "-m", "jdistill.generate", "--config=configs/generate.py",
        f"--config.teacher.path={teacher_dir}", "--config.teacher.param_dtype=float32",
        "--config.teacher.compute_dtype=float32", f"--config.data.prompt_files={prompt_file}",
        "--config.data.max_prompt_len=16", f"--config.output.path={output}",
        "--config.generation.batch_size=8", "--config.generation.max_new_tokens=8",
        "--config.generation.max_batches=1",
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(read_jsonl(output)) == 8
    assert "already answered" in done.stdout
    typo = subprocess.run(
        command[:4] + ["--config.generation.temprature=0.5"], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=600,
    )
    assert typo.returncode == 2 and "Did you mean 'generation.temperature'" in typo.stderr
