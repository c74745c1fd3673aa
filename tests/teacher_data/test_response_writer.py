"""The append-only response file: batches, resume ids, partial-line recovery."""

import json

import pytest

from jdistill.data.response_writer import ResponseWriter, read_done_ids


def test_write_and_resume(tmp_path):
    path = tmp_path / "out" / "responses.jsonl"
    with ResponseWriter(path) as writer:
        assert writer.done_ids == set()
        assert writer.write([{"id": "a", "response": "x"}, {"id": 2, "response": "é"}]) == 2
        assert writer.write([]) == 0
    with ResponseWriter(path) as writer:
        assert writer.done_ids == {"a", "2"}
        writer.write([{"id": "c", "response": "z"}])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", 2, "c"]
    assert json.loads(lines[1])["response"] == "é"


def test_a_partial_last_line_is_truncated(tmp_path):
    path = tmp_path / "responses.jsonl"
    complete = json.dumps({"id": "a", "response": "x"}) + "\n"
    path.write_text(complete + '{"id": "b", "resp', encoding="utf-8")
    with ResponseWriter(path) as writer:
        assert writer.done_ids == {"a"}
        assert writer.truncated_bytes == len('{"id": "b", "resp')
        writer.write([{"id": "b", "response": "y"}])
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "b"]


def test_a_corrupt_complete_line_is_an_error(tmp_path):
    path = tmp_path / "responses.jsonl"
    path.write_text('{"id": "a"}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"responses.jsonl:2 is not valid JSON"):
        ResponseWriter(path)
    path.write_text('{"response": "no id"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="has no 'id'"):
        ResponseWriter(path)


def test_read_done_ids_leaves_the_file_alone(tmp_path):
    path = tmp_path / "responses.jsonl"
    assert read_done_ids(path) == set()
    text = '{"id": "a"}\n{"id": 3}\n{"id": "par'
    path.write_text(text, encoding="utf-8")
    assert read_done_ids(path) == {"a", "3"}
    assert path.read_text(encoding="utf-8") == text
