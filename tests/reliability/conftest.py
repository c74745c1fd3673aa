"""Shared fixtures of the reliability suite: one tiny teacher/student/data set-up per session."""

import pytest

from tests.engine import tiny_setup


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return tiny_setup.make_setup(tmp_path_factory.mktemp("tiny"))
