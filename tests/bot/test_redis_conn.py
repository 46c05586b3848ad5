"""The embedded default's Redis: the machine's own valkey-server or redis-server, started on a unix socket."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import redis

from bot.core.settings import Settings
from bot.redis_conn import (
    RedisServerNotFound,
    connect,
    embedded_socket,
    ensure_embedded_redis,
    find_redis_server,
    stop_embedded_redis,
    sync_client,
)
from tests.conftest import settings_for


def test_without_a_server_binary_the_error_says_how_to_get_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing to run here
    with pytest.raises(RedisServerNotFound) as err:
        find_redis_server(settings_for(tmp_path))
    assert "apt-get install redis-server" in str(err.value) and "DESKMATE_REDIS_URL" in str(err.value)


def test_valkey_is_preferred_and_the_setting_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("valkey-server", "redis-server", "my-redis"):
        binary = tmp_path / name
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_server(settings_for(tmp_path)) == str(tmp_path / "valkey-server")
    assert find_redis_server(settings_for(tmp_path, redis_server=str(tmp_path / "my-redis"))) == str(
        tmp_path / "my-redis")
    with pytest.raises(RedisServerNotFound):
        find_redis_server(settings_for(tmp_path, redis_server="/nowhere/redis-server"))


def test_the_embedded_server_starts_keeps_data_and_stops(tmp_path: Path) -> None:
    if not (shutil.which("valkey-server") or shutil.which("redis-server")):
        pytest.fail("scripts/setup.sh installs redis-server; the embedded default needs it")
    settings: Settings = settings_for(tmp_path / "data")
    proc = ensure_embedded_redis(settings)
    assert proc is not None
    sock = embedded_socket(settings)
    try:
        client = redis.Redis(unix_socket_path=str(sock))
        client.set("deskmate:probe", "1")
        assert ensure_embedded_redis(settings) is None, "a second process reuses the running server"
        assert oct(os.stat(sock).st_mode & 0o777) == "0o700", "only this user may talk to it"
        client.close()
    finally:
        stop_embedded_redis(proc)
    assert proc.poll() is not None
    again = ensure_embedded_redis(settings)
    try:
        assert redis.Redis(unix_socket_path=str(sock)).get("deskmate:probe") == b"1", "persistence is on"
    finally:
        stop_embedded_redis(again)


async def test_connections_are_bounded_over_the_embedded_unix_socket_and_over_tcp(
        tmp_path: Path, redis_url: str) -> None:
    """Every client gets a read timeout; TCP ones also keep-alive (a unix socket refuses that option: the embedded
    default's web process could not reach its Redis when it was passed)."""
    settings = settings_for(tmp_path / "data", redis_read_timeout_s=7)
    proc = ensure_embedded_redis(settings)
    try:
        for current, tcp in ((settings, False), (settings_for(tmp_path / "data", redis_url=redis_url,
                                                              redis_read_timeout_s=7), True)):
            pool = await connect(current)
            try:
                assert await pool.set("deskmate:probe", "1") and await pool.get("deskmate:probe") == b"1"
                (connection,) = pool.connection_pool._available_connections
                assert connection.socket_timeout == 7
                assert getattr(connection, "socket_keepalive", False) is tcp
            finally:
                await pool.aclose()
            client = sync_client(current, min_read_timeout_s=9)
            try:
                assert client.get("deskmate:probe") == b"1"
                kwargs = client.connection_pool.connection_kwargs
                assert kwargs["socket_timeout"] == 9 and kwargs.get("socket_keepalive", False) is tcp
            finally:
                client.close()
    finally:
        stop_embedded_redis(proc)
