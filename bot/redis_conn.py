"""Connecting to Redis: the configured server, or an embedded one the local default starts itself.

With ``DESKMATE_REDIS_URL`` unset, :func:`ensure_embedded_redis` starts the machine's own ``valkey-server`` or
``redis-server`` (``DESKMATE_REDIS_SERVER``, else the first on PATH; ``scripts/setup.sh`` installs one with the
system's package manager) on a unix socket under the data directory (persistence on, so a pending job survives
a restart). Other Deskmate processes on the machine find it by the same socket path.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import redis
from arq.connections import ArqRedis, RedisSettings, create_pool
from redis import Redis as SyncRedis
from redis.asyncio.connection import Connection as AsyncTcpConnection
from redis.connection import Connection as SyncTcpConnection

from bot.core.log import get_logger
from bot.core.settings import Settings

log = get_logger(__name__)


def embedded_socket(settings: Settings) -> Path:
    return (settings.data_dir / "redis" / "redis.sock").resolve()


def redis_url(settings: Settings) -> str:
    return settings.redis_url or f"unix://{embedded_socket(settings)}"


def redis_settings(settings: Settings) -> RedisSettings:
    """arq's connection settings for our URL (tcp, tls or unix socket)."""
    url = redis_url(settings)
    parsed = urlparse(url)
    if parsed.scheme == "unix":
        return RedisSettings(unix_socket_path=parsed.path, conn_timeout=2, conn_retries=2, conn_retry_delay=1)
    rs = RedisSettings.from_dsn(url)
    rs.conn_timeout, rs.conn_retries, rs.conn_retry_delay = 2, 2, 1
    return rs


def _ping(socket_path: Path) -> bool:
    try:
        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


#: Binaries the embedded default can run, in order of preference (Valkey: the BSD-licensed fork of Redis).
SERVER_BINARIES = ("valkey-server", "redis-server")


class RedisServerNotFound(RuntimeError):
    pass


def find_redis_server(settings: Settings) -> str:
    """The server binary the embedded default starts (see the module docstring)."""
    if settings.redis_server:
        path = shutil.which(settings.redis_server)
        if path is None:
            raise RedisServerNotFound(f"DESKMATE_REDIS_SERVER={settings.redis_server!r} is not an executable")
        return path
    for name in SERVER_BINARIES:
        path = shutil.which(name)
        if path is not None:
            return path
    raise RedisServerNotFound(
        "no valkey-server or redis-server on PATH: install one (scripts/setup.sh does: apt-get install "
        "redis-server, brew install valkey, dnf install valkey), set DESKMATE_REDIS_SERVER to its path, or point "
        "DESKMATE_REDIS_URL at a running server")


def ensure_embedded_redis(settings: Settings) -> subprocess.Popen[bytes] | None:
    """Start the machine's redis-server unless a server already answers on the socket (or a URL is set).

    Returns the process when this call started it (the caller stops it), else None.
    """
    if settings.redis_url:
        return None
    sock = embedded_socket(settings)
    if _ping(sock):
        return None
    binary = find_redis_server(settings)
    directory = sock.parent
    directory.mkdir(parents=True, exist_ok=True)
    if sock.exists():
        sock.unlink()
    args = [
        binary, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
        "--dir", str(directory), "--dbfilename", "dump.rdb", "--appendonly", "yes", "--save", "60 1",
        "--daemonize", "no", "--loglevel", "warning", "--logfile", str(directory / "redis.log"),
    ]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _ping(sock):
            log.info("redis.embedded.started", socket=str(sock), pid=proc.pid)
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"the embedded {Path(binary).name} did not start; see {directory / 'redis.log'}")


def stop_embedded_redis(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


async def connect(settings: Settings) -> ArqRedis:
    """An arq pool (a redis.asyncio client with ``enqueue_job``), its reads bounded (:func:`bound_reads`)."""
    return await bound_reads(await create_pool(redis_settings(settings), retry=0), settings)


async def bound_reads(pool: ArqRedis, settings: Settings) -> ArqRedis:
    """Give ``pool``'s connections a read timeout (``DESKMATE_REDIS_READ_TIMEOUT_S``), and TCP keep-alive when
    they are TCP connections (a unix socket, the embedded default's, has none).

    arq opens its connections with a connect timeout only: on a connection that died without a reset (the Redis
    host gone, a firewall or NAT dropping an idle connection) a command waited for its reply forever — a worker's
    poll loop stood still while its ``/readyz`` still said ok. With a read timeout the command raises redis-py's
    ``TimeoutError``, which every caller already handles as "Redis lost" (the worker rides it out and reconnects).
    No command Deskmate sends blocks longer than a few seconds (the local chat's ``XREAD`` blocks 1 s)."""
    _bound(pool.connection_pool, settings.redis_read_timeout_s,
           tcp=issubclass(pool.connection_pool.connection_class, AsyncTcpConnection))
    # the connection create_pool pinged with was made without them (a connection keeps its own settings when it
    # reconnects): close and forget it, so that the next command makes one that has them
    await pool.connection_pool.disconnect()
    pool.connection_pool.reset()
    return pool


def sync_client(settings: Settings, *, min_read_timeout_s: float = 0.0) -> SyncRedis:
    """A synchronous client (for work in threads) with the same bounds as :func:`bound_reads`; its read timeout
    is at least ``min_read_timeout_s`` (for a blocking command that waits that long)."""
    client = SyncRedis.from_url(redis_url(settings), socket_connect_timeout=2)
    _bound(client.connection_pool, max(min_read_timeout_s, settings.redis_read_timeout_s),
           tcp=issubclass(client.connection_pool.connection_class, SyncTcpConnection))
    return client


def _bound(pool: Any, read_timeout_s: float, *, tcp: bool) -> None:
    pool.connection_kwargs["socket_timeout"] = read_timeout_s
    if tcp:  # a unix socket connection takes no keep-alive option (it refuses the keyword)
        pool.connection_kwargs["socket_keepalive"] = True
