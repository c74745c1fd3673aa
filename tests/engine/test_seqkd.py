"""SeqKD: the teacher's generated responses become the training data; black-box files work the same way."""

import json

import pytest

from jdistill.engine import trainer
from tests.engine import tiny_setup


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_setup.make_setup(tmp_path_factory.mktemp("seqkd"))


def _seqkd_config(setup, **overrides):
    return tiny_setup.tiny_config(setup, "seqkd", **{
        "train.steps": 2, "eval.generate": False, "train.export_hf": False,
        "method.teacher_data.max_new_tokens": 6, "method.teacher_data.batch_size": 16, **overrides,
    })


@pytest.mark.slow
def test_teacher_answers_the_training_prompts(setup, tmp_path):
    result = trainer.run(_seqkd_config(setup), str(tmp_path))
    records = [json.loads(line) for line in open(tmp_path / "teacher_responses.jsonl")]
    train = [json.loads(line) for line in open(setup["train"])]
    assert len(records) == len(train) == 48
    assert {r["id"]: r["prompt"] for r in records} == {t["id"]: t["prompt"] for t in train}
    gold = {t["id"]: t["response"] for t in train}
    assert any(r["response"] != gold[r["id"]] for r in records)  # the teacher's words, not the gold ones
    assert result.steps == 2


def test_black_box_responses_file_needs_no_teacher(setup, tmp_path):
    responses = tmp_path / "api.jsonl"
    responses.write_text("".join(json.dumps({"prompt": f"what is {i} plus 1 ?", "response": f"it is {i + 1} ."})
                                 + "\n" for i in range(16)))
    config = _seqkd_config(setup, **{"teacher.path": "", "method.teacher_data.responses_file": str(responses)})
    result = trainer.run(config, str(tmp_path / "work"))
    assert result.steps == 2
    assert not (tmp_path / "work" / "teacher_responses.jsonl").exists()


def test_seqkd_without_teacher_or_responses_is_a_clear_error(setup, tmp_path):
    with pytest.raises(ValueError, match="SeqKD needs a teacher.*teacher_data.responses_file"):
        trainer.run(_seqkd_config(setup, **{"teacher.path": ""}), str(tmp_path))
