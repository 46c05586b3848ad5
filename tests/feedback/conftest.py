from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bot.core.settings import Settings
from feedback.db import Database, get_database
from tests.feedback.helpers import write_golden


@pytest.fixture
def small_golden(tmp_path: Path) -> Path:
    return write_golden(tmp_path / "small.jsonl")


@pytest.fixture
def settings(make_settings: Callable[..., Settings], small_golden: Path) -> Settings:
    """No API key (extractive answers); the gate evaluates on the small golden set."""
    return make_settings(gate_dataset=small_golden)


@pytest.fixture
def db(settings: Settings) -> Database:
    database = get_database(settings.database_url_resolved())
    database.migrate()
    return database

