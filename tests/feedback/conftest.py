from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bench.scale_out import Postgres
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


@pytest.fixture(params=["sqlite", "postgres"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database to migrate: SQLite, and a throwaway PostgreSQL server when its binaries are here."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    try:
        server = Postgres()
        server.start()
    except Exception as exc:  # noqa: BLE001 - no PostgreSQL binaries here
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    try:
        yield server.url
    finally:
        server.stop()
