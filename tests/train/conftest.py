"""Fixtures for the training tests: a small prepared-data directory."""

import pytest

from tests.conftest import ticket_rows, write_jsonl


@pytest.fixture
def data_dir(tmp_path):
    rows = ticket_rows(40)
    write_jsonl(tmp_path / "train.jsonl", rows[:32])
    write_jsonl(tmp_path / "val.jsonl", rows[32:])
    return tmp_path
