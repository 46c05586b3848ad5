"""Shared fixtures: real servers on free ports and indexes built once per test session.

- ``redis_server``: a real redis-server (session); ``redis_url`` flushes it for each test.
- ``sample_data_dir``: a data dir with the bundled sample knowledge base ingested once (read-only for tests).
- ``make_settings``: Settings for a test — the shared index, a fresh SQLite database, the test's Redis.
- ``fake_anthropic``: a local Messages API server (reset per test).
- ``stack``: the web process and a worker, in this event loop, on free ports (see tests/stack.py).
- ``database``: a fresh SQLite database with the schema, in the test's tmp dir (copied from one migrated once).
- ``arq_redis``: an arq pool on the test's (flushed) Redis, closed after the test.
- ``sample_retriever``: a :class:`~knowledge.retrieval.Retriever` over the shared sample index (read-only).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from bot.core.files import exclusive_lock
from bot.core.settings import SAMPLE_KNOWLEDGE_DIR, Settings
from tests.fakes.redis_server import RedisServer, start_redis_server

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
SHARED_DIR = Path(os.environ.get("DESKMATE_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
FIXTURES_DIR = SHARED_DIR / "fixtures"

# Settings read from the developer's environment or .env must not leak into tests.
for _name in list(os.environ):
    if _name.startswith("DESKMATE_") and _name != "DESKMATE_SHARED_DIR":
        del os.environ[_name]


def settings_for(data_dir: Path, **overrides: Any) -> Settings:
    """Settings that ignore the environment and .env files. A worker built from them searches in its own
    threads (``search_processes=0``): a search process per test costs seconds. The search process is tested in
    ``tests/knowledge/test_search_process.py``, and as deployed by the workers the main command and
    ``tests/playbooks`` start."""
    values: dict[str, Any] = {"search_processes": 0, **overrides}
    return Settings(_env_file=None, data_dir=data_dir, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with start_redis_server() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if not redis_server.running:
        redis_server.start()
    redis_sync.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def sample_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample knowledge base ingested once per run (kb "default"); tests must not modify this index.

    Under xdist the first worker that needs it ingests it (under a lock) and every worker gets its own copy: the
    ingestion embeds every chunk twice (MiniLM and the cross-lingual model), about a minute of CPU on a slow core,
    which each worker used to spend again."""
    data_dir = tmp_path_factory.mktemp("sample-data")
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # not under xdist
        _ingest_sample(data_dir)
        return data_dir
    shared = tmp_path_factory.getbasetemp().parent / "sample-data"  # this run's, beside its workers' own folders
    with exclusive_lock(shared.with_name("sample-data.lock")):
        if not (shared / ".ingested").exists():
            _ingest_sample(shared)
            (shared / ".ingested").touch()
    shutil.copytree(shared, data_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".ingested"))
    return data_dir


def _ingest_sample(data_dir: Path) -> None:
    from knowledge.config import KnowledgeConfig
    from knowledge.index import IndexStore
    from knowledge.ingest import ingest

    report = ingest(IndexStore(KnowledgeConfig.from_settings(settings_for(data_dir))), SAMPLE_KNOWLEDGE_DIR,
                    kb="default")
    assert report.created_version and report.chunks_total > 50


@pytest.fixture
def make_settings(sample_data_dir: Path, tmp_path: Path, redis_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": f"sqlite:///{tmp_path / 'deskmate.db'}",
            "redis_url": redis_url,
            "worker_poll_delay_s": 0.02,
            "sweeper_interval_s": 1,
            "sweeper_min_age_s": 0.5,
            "job_timeout_s": 30,
            "web_port": 0,
        }
        values.update(overrides)
        return settings_for(sample_data_dir, **values)

    return make


@pytest.fixture(scope="session")
async def fake_anthropic_server() -> AsyncIterator[Any]:
    from tests.fakes.anthropic_server import start_fake_anthropic

    async with start_fake_anthropic() as fake:
        yield fake


@pytest.fixture
async def fake_anthropic(fake_anthropic_server: Any) -> AsyncIterator[Any]:
    fake_anthropic_server.reset()
    yield fake_anthropic_server
    fake_anthropic_server.reset()


@pytest.fixture
async def stack(make_settings: Callable[..., Settings]) -> AsyncIterator[Any]:
    """Web + worker with the default test settings (no API key: extractive answers)."""
    from tests.stack import running_stack

    async with running_stack(make_settings()) as running:
        yield running


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with the schema migrated once per session (``database`` copies it: migrating costs ~0.2 s)."""
    from feedback.db import Database

    path = tmp_path_factory.mktemp("schema") / "template.db"
    template = Database(f"sqlite:///{path}")
    template.migrate()
    template.engine.dispose()
    return path


@pytest.fixture
async def database(migrated_sqlite: Path, tmp_path: Path) -> AsyncIterator[Any]:
    """A fresh, migrated SQLite :class:`~feedback.db.Database` of this test's own (in-process, no server)."""
    from feedback.db import Database

    target = tmp_path / "unit.db"
    source, copy = sqlite3.connect(migrated_sqlite), sqlite3.connect(target)
    try:
        source.backup(copy)  # consistent even with the template in WAL mode
    finally:
        source.close()
        copy.close()
    db = Database(f"sqlite:///{target}")
    try:
        yield db
    finally:
        await db.aclose()


@pytest.fixture
async def arq_redis(redis_url: str) -> AsyncIterator[Any]:
    """An arq pool (``enqueue_job`` + the redis.asyncio API) on the test's freshly flushed Redis."""
    from arq.connections import RedisSettings, create_pool

    pool = await create_pool(RedisSettings.from_dsn(redis_url), retry=0)
    try:
        yield pool
    finally:
        await pool.aclose()


@pytest.fixture(scope="session")
def sample_retriever(sample_data_dir: Path) -> Any:
    """Hybrid retrieval over the shared sample index (kb "default"); tests must not modify the index."""
    from knowledge.config import KnowledgeConfig
    from knowledge.index import IndexStore
    from knowledge.retrieval import Retriever

    return Retriever(IndexStore(KnowledgeConfig.from_settings(settings_for(sample_data_dir))))


@pytest.fixture(autouse=True)
async def loop_guard(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Before and after each test (and its fixtures), drop selector entries for sockets closed behind the shared
    loop's back, and say which test left them (see tests/loop_guard.py): one leak must not fail an unrelated later
    test. Before: a socket garbage-collected between tests."""
    import asyncio

    from tests.loop_guard import guard

    guard(asyncio.get_running_loop(), f"before {request.node.nodeid}")
    yield
    guard(asyncio.get_running_loop(), request.node.nodeid)
