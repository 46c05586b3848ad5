"""Database access: one :class:`Database` per process, sync for the CLI and async for adapters and worker.

SQLite (the embedded default) runs in WAL mode with a busy timeout so that the web process, the worker and the
CLI can share the file; Postgres is used as given by ``DESKMATE_DATABASE_URL``. The schema is created and
upgraded only by Alembic migrations (:func:`migrate`), never by ``create_all``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import Session, create_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.core.files import exclusive_lock

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
T = TypeVar("T")


def sync_url(url: str) -> str:
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres", "postgresql+asyncpg"):
        u = u.set(drivername="postgresql+psycopg")
    if u.drivername == "sqlite+aiosqlite":
        u = u.set(drivername="sqlite")
    return u.render_as_string(hide_password=False)


def async_url(url: str) -> str:
    u = make_url(sync_url(url))
    if u.drivername == "sqlite":
        u = u.set(drivername="sqlite+aiosqlite")
    return u.render_as_string(hide_password=False)


#: Postgres connections (libpq parameters, for psycopg's sync and async connections alike). Without them libpq
#: waits for a server that accepts the connection and never answers for ever (``connect_timeout`` is unset by
#: default), and a query whose server vanished without a reset — a host gone, a network partition — for as long as
#: the kernel retransmits (~15 minutes on Linux): every answer in flight would hang with it. With them, a
#: connection that cannot be made fails after 10 s, and one whose server stopped acknowledging fails after 30 s;
#: the job fails, arq retries it, and the answer comes late rather than never.
POSTGRES_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": 10,
    "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # ms
}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    """Engines and sessions for one database URL."""

    def __init__(self, url: str) -> None:
        self.url = sync_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            path = make_url(self.url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        if self.is_sqlite:
            sync_args: dict[str, Any] = {"check_same_thread": False, "timeout": 10}
            async_args: dict[str, Any] = {"timeout": 10}
        elif make_url(self.url).get_backend_name() == "postgresql":
            sync_args, async_args = dict(POSTGRES_CONNECT_ARGS), dict(POSTGRES_CONNECT_ARGS)
        else:
            sync_args, async_args = {}, {}
        # hide_parameters: a failed statement's exception (logged with its traceback, by us or by arq) would
        # otherwise carry its bound values — a question's or an answer's text, a user's id
        self.engine: Engine = create_engine(self.url, connect_args=sync_args, pool_pre_ping=not self.is_sqlite,
                                            hide_parameters=True)
        self.async_engine: AsyncEngine = create_async_engine(
            async_url(self.url), connect_args=async_args,
            pool_pre_ping=not self.is_sqlite,  # a file has no connection to go stale: no ping per session
            hide_parameters=True,
        )
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.async_engine.sync_engine, "connect", _sqlite_pragmas)
        self._async_sessions = async_sessionmaker(self.async_engine, class_=AsyncSession, expire_on_commit=False)
        #: SQLite: this process's writer thread (see :meth:`write`); Postgres: the loop's default executor
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="deskmate-db-writer") if self.is_sqlite else None

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    @asynccontextmanager
    async def asession(self) -> AsyncIterator[AsyncSession]:
        async with self._async_sessions() as session:
            yield session

    async def write(self, transaction: Callable[[Session], T]) -> T:
        """Run ``transaction`` — a short write that commits or rolls back itself — with a sync session in a
        thread: one hand-over to the thread and back, instead of one per statement and the commit.

        An async session pays a round trip through the event loop for each statement; with hundreds of answers in
        flight each of those waits for a busy loop, and SQLite's write lock is held across them (the answers
        started and finished by the worker queued on it: issue 16). With SQLite every write of this process goes
        through one writer thread, so they never wait on each other in SQLite's busy handler (which sleeps up to
        100 ms at a time); other processes' writes still take turns with it through that handler.
        """
        def run() -> T:
            with self.session() as session:
                return transaction(session)

        return await asyncio.get_running_loop().run_in_executor(self._writer, run)

    async def check_writable(self) -> None:
        """Readiness: the database answers *and* accepts writes. A no-op update of Alembic's version row,
        rolled back, fails on a read-only database (a read-only SQLite file or mount, a Postgres standby or
        ``default_transaction_read_only``) where ``SELECT 1`` still succeeds."""
        async with self.async_engine.connect() as conn:
            transaction = await conn.begin()
            try:
                await conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
            finally:
                await transaction.rollback()

    def migrate(self) -> None:
        migrate(self.url)

    async def aclose(self) -> None:
        await self.async_engine.dispose()
        if self._writer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._writer.shutdown)
        self.engine.dispose()


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema at ``url`` up to ``revision`` (idempotent; safe to call at every start, and from
    processes starting together: they migrate one after the other — a file lock beside a SQLite database, an
    advisory lock on Postgres (feedback/migrations/env.py))."""
    with _sqlite_migration_lock(url):
        command.upgrade(alembic_config(url), revision)


@contextmanager
def _sqlite_migration_lock(url: str) -> Iterator[None]:
    u = make_url(sync_url(url))
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        yield
        return
    with exclusive_lock(Path(u.database).with_name(Path(u.database).name + ".migrate-lock")):
        yield


_databases: dict[str, Database] = {}


def get_database(url: str) -> Database:
    """The process's :class:`Database` for ``url`` (engines are pools: one per process and URL)."""
    db = _databases.get(url)
    if db is None:
        db = _databases[url] = Database(url)
    return db
