"""A Postgres that accepts connections and never answers (a hung server, a host behind a firewall that still
completes the handshake): connecting fails within the connect timeout instead of waiting for ever, for the sync
engine (the database writer, migrations) and the async one (an answer's reads) alike. No Postgres is needed: a
socket that listens and never accepts is such a server."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy.exc import OperationalError

from feedback.db import POSTGRES_CONNECT_ARGS, Database

TIMEOUT_S = 2  # libpq's smallest connect_timeout; the product's is POSTGRES_CONNECT_ARGS's 10
WITHIN_S = TIMEOUT_S + 8


@pytest.fixture
def silent_postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setitem(POSTGRES_CONNECT_ARGS, "connect_timeout", TIMEOUT_S)
    with socket.create_server(("127.0.0.1", 0)) as server:  # the kernel completes handshakes; nobody answers
        yield f"postgresql://deskmate:secret@127.0.0.1:{server.getsockname()[1]}/deskmate"


def test_a_silent_postgres_fails_a_sync_connection_within_the_timeout(silent_postgres: str) -> None:
    db = Database(silent_postgres)
    outcome: list[BaseException] = []

    def connect() -> None:
        try:
            with db.engine.connect():
                pass
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    started = time.monotonic()
    attempt = threading.Thread(target=connect, daemon=True)  # a connection that hangs must not hang the suite
    attempt.start()
    attempt.join(WITHIN_S)
    assert outcome, f"still connecting after {WITHIN_S} s"
    assert isinstance(outcome[0], OperationalError) and time.monotonic() - started < WITHIN_S


async def test_a_silent_postgres_fails_an_async_connection_within_the_timeout(silent_postgres: str) -> None:
    db = Database(silent_postgres)

    async def connect() -> None:
        async with db.async_engine.connect():
            pass

    with pytest.raises(OperationalError):
        await asyncio.wait_for(connect(), WITHIN_S)  # a TimeoutError instead: it would have waited for ever
    await db.async_engine.dispose()
