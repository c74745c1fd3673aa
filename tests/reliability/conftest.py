"""Shared fixtures of the reliability suite: one tiny teacher/student/data set-up per session."""

import os

import pytest

from tests.engine import tiny_setup

_HERE = os.path.dirname(os.path.abspath(__file__))

# The kill -9 worker runs as a subprocess of test_run_faults.py; `--doctest-modules` must not import it.
collect_ignore = ["kill_worker.py"]


def pytest_collection_modifyitems(items):
    # Damaged checkpoints leave orbax read coroutines that are only collected later; their
    # "exception ignored" notices are expected here, not failures.
    for item in items:
        if str(item.fspath).startswith(_HERE):
            item.add_marker(pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return tiny_setup.make_setup(tmp_path_factory.mktemp("tiny"))
