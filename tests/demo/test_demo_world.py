"""The demo's world, tasks and splits: answers with entropy, the facts they draw on, a prompt pool, a corpus."""

import collections
import random

import pytest

from jdistill import data as data_lib
from jdistill.demo import tasks, world


@pytest.fixture(scope="module")
def splits():
    return tasks.demo_splits()


def test_split_sizes_and_disjoint_ids(splits):
    assert {name: len(records) for name, records in splits.items() if "corpus" not in name} == tasks.SPLIT_SIZES
    assert len(splits["corpus"]) == len(splits["teacher_corpus"]) == tasks.CORPUS_DOCUMENTS
    ids = [r["id"] for records in splits.values() for r in records]
    assert len(ids) == len(set(ids))
    assert len(splits["test"]) >= 1000  # the protocol's test-split size


def test_the_prompt_pool_is_unlabelled_and_from_the_task_distribution(splits):
    pool = splits["prompts"]
    assert all(r["response"] == "" for r in pool)
    counts = collections.Counter(r["task"] for r in pool)
    assert set(counts) == set(tasks.TASKS)
    # Every family has roughly its 1/9 share (4000 draws: within ±35%).
    assert all(300 < c < 600 for c in counts.values()), counts


def test_diet_answers_follow_the_creatures_food_distribution():
    creature = world.creatures()[0]
    rng = random.Random(0)
    foods = collections.Counter(creature.sample_food(rng) for _ in range(20000))
    for food, weight in zip(creature.diet, world.HABIT_WEIGHTS):
        assert foods[food] / 20000 == pytest.approx(weight, abs=0.015)


def test_answers_have_several_right_phrasings(splits):
    """Per task family, the number of distinct answer phrasings of one prompt (the first creature's facts)."""
    rng = random.Random(1)
    creature = world.creatures()[:1]
    distinct = {task: len({tasks.make_record(task, rng, creature)[1] for _ in range(400)})
                for task in ("colour", "home", "diet", "call", "describe", "two_foods", "greeting")}
    assert distinct == {"colour": 2, "home": 2, "diet": 6, "call": 6, "describe": 3, "two_foods": 2, "greeting": 4}


def test_responses_state_the_worlds_facts(splits):
    by_name = {c.name: c for c in world.creatures()}
    checked = 0
    for record in splits["test"]:
        if record["task"] != "colour":
            continue
        name = record["prompt"].split("What colour is a ")[1].split("?")[0]
        assert by_name[name].colour in record["response"]
        checked += 1
    assert checked > 50


def test_corpus_documents_are_title_and_body(splits):
    doc = splits["corpus"][0]
    assert set(doc) == {"id", "prompt", "response"}
    assert doc["prompt"].endswith(".") and doc["response"].startswith(" ")
    assert 3 <= doc["response"].count(".") <= 5


def test_habits_are_only_in_the_teachers_corpus(splits):
    """The student's base never reads of diets and calls; about a third of the teacher's creature sentences do."""
    words = set(world.FOODS) | set(world.CALLS)

    def habit_documents(name):
        return sum(bool(set(d["response"].replace(".", " ").split()) & words) for d in splits[name])

    assert habit_documents("corpus") == 0
    assert habit_documents("teacher_corpus") > 0.5 * tasks.CORPUS_DOCUMENTS


def test_prompt_pool_records_are_kept_only_for_prompt_only_methods(splits):
    pool = splits["prompts"][:5]
    kept, skips = data_lib.to_text_examples(pool)
    assert kept == [] and skips.total == 5
    kept, skips = data_lib.to_text_examples(pool, allow_empty_response=True)
    assert [e.prompt for e in kept] == [r["prompt"] for r in pool] and skips.total == 0
    assert all(e.response == "" for e in kept)


def test_resolved_builds_every_demo_path_including_extra_teachers(tmp_path, monkeypatch):
    """``demo:`` entries of the multi-teacher list fields resolve like the single path fields (cached assets kept)."""
    from jdistill import demo
    from jdistill.demo import assets
    from jdistill.engine.defaults import base_config

    monkeypatch.setenv("JDISTILL_CACHE", str(tmp_path))
    for name in ("teacher", "teacher_b"):
        (assets.cache_root() / name).mkdir(parents=True)
    config = base_config("multi_teacher")
    config.teacher.path = "demo:teacher"
    config.teacher.extra_paths = "demo:teacher_b, /models/other"
    assert demo.uses_demo(config)
    out = demo.resolved(config)
    root = assets.cache_root()
    assert out.teacher.path == str(root / "teacher")
    assert out.teacher.extra_paths == f"{root / 'teacher_b'},/models/other"
    assert config.teacher.extra_paths == "demo:teacher_b, /models/other"  # the given config is not written
