"""Issue 17, items 4, 5 and 8: bad data files give messages naming the file and line, before the first step."""

import json
import os

import pytest

from jdistill import data
from jdistill.data.records import DataError, SkipReport
from jdistill.engine import trainer
from tests.engine import tiny_setup


def _write(path, lines: list[bytes]):
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return str(path)


def _good(i: int) -> bytes:
    return json.dumps({"prompt": f"what is {i} plus 1 ?", "response": f"it is {i + 1} ."}).encode()


def test_an_empty_file_is_named(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match=f"^{empty} holds no records \\(the file is empty\\).$"):
        data.load_records(str(empty))


def test_a_malformed_line_is_skipped_and_counted_with_its_file_and_line(tmp_path):
    path = _write(tmp_path / "train.jsonl", [_good(0), b'{"prompt": "x", "response": ', _good(2), b"", _good(3)])
    skips = SkipReport()
    records = data.load_records(path, on_bad_record="skip", skips=skips)
    assert [r["prompt"] for r in records] == ["what is 0 plus 1 ?", "what is 2 plus 1 ?", "what is 3 plus 1 ?"]
    assert skips.summary() == ("1 records skipped: 1 not valid JSON (Expecting value at column 29) "
                               "(e.g. record train.jsonl:2)")
    with pytest.raises(DataError) as error:
        data.load_records(path, on_bad_record="error", skips=SkipReport())
    assert str(error.value) == (f"{path}, line 2: not valid JSON (Expecting value at column 29). Fix the line or "
                                "set --config.data.on_bad_record=skip.")


def test_non_utf8_input_names_the_file_and_line(tmp_path):
    path = _write(tmp_path / "latin1.jsonl", [_good(0), '{"prompt": "caf\xe9", "response": "x"}'.encode("latin-1")])
    with pytest.raises(DataError) as error:
        data.load_records(path)
    assert str(error.value) == f"{path}, line 2: not valid UTF-8 (byte 0xe9 at column 16). Re-encode the file as UTF-8."


def test_a_file_replaced_with_its_mtime_preserved_is_read_again(tmp_path):
    """`cp -p`, `rsync -a`, archives: same path, same mtime, new content; the new content is trained on."""
    path = tmp_path / "train.jsonl"
    _write(path, [_good(1)])
    stamp = os.stat(path)
    assert data.load_records(str(path))[0]["prompt"] == "what is 1 plus 1 ?"
    _write(path, [_good(7)])
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == stamp.st_mtime_ns and os.stat(path).st_size == stamp.st_size
    assert data.load_records(str(path))[0]["prompt"] == "what is 7 plus 1 ?"


def test_left_truncated_prompts_keep_their_bos(tiny):
    tokenizer = tiny["tokenizer"]
    example = data.TextExample("0", "what is 1 plus 2 ? what is 3 plus 4 ?", "it is 7 .")
    (tok,), stats = data.tokenize_examples([example], tokenizer, max_len=16, max_prompt_len=5)
    prompt = tok.student.ids[: tok.student.prompt_len].tolist()
    assert stats.truncated == 1 and len(prompt) == 5
    assert prompt[0] == tokenizer.bos_token_id
    assert tokenizer.decode(prompt[1:]) == "3 plus 4 ?"


def test_an_eval_split_emptied_by_truncation_drop_stops_before_training(tiny, tmp_path):
    long_eval = [{"prompt": " ".join(["what is 1 plus 2 ?"] * 6), "response": "it is 3 ."}] * 4
    config = tiny_setup.tiny_config(tiny, "kd", **{
        "data.eval_files": str(tiny_setup.write_jsonl(tmp_path / "eval.jsonl", long_eval)),
        "data.truncation": "drop"})
    with pytest.raises(DataError) as error:
        trainer.run(config, str(tmp_path / "work"))
    assert str(error.value).startswith(
        "Only 0 usable evaluation examples (of 4 records) for an evaluation: 4 records skipped: "
        "4 too long (truncation=drop) (e.g. record 0).")
    assert not os.path.exists(tmp_path / "work" / "checkpoints")  # stopped before the first step


def test_whitespace_responses_say_why_nothing_is_usable(tiny, tmp_path):
    blank = [{"prompt": f"what is {i} plus 1 ?", "response": "  \n "} for i in range(12)]
    config = tiny_setup.tiny_config(tiny, "kd", **{
        "data.train_files": str(tiny_setup.write_jsonl(tmp_path / "train.jsonl", blank))})
    with pytest.raises(DataError) as error:
        trainer.run(config, str(tmp_path / "work"))
    assert str(error.value).startswith(
        "Only 0 usable training examples (of 12 records) for a batch of train.batch_size=8: 12 records skipped: "
        "12 empty response (e.g. record 0).")


def test_truncating_every_example_is_a_warning(tiny, capsys):
    from jdistill.engine.run_setup import warn_truncation
    from jdistill.engine.defaults import base_config

    warn_truncation("training", 48, 48, base_config("kd").data)
    assert ("WARNING: truncation touched 48 of 48 training records (100.0%: 48 cut to fit) at data.max_len=512"
            in capsys.readouterr().out)
