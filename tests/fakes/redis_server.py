"""A throwaway real redis-server for tests: free port, no persistence, can be stopped and restarted.

    with start_redis_server() as server:
        client = redis.asyncio.Redis.from_url(server.url)
        ...
        server.stop()    # Redis is down: what does the code under test do?
        server.start()   # back, on the same port and URL (empty: nothing was persisted)

Uses ``valkey-server`` or ``redis-server`` from PATH, as the embedded default does.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bot.core.settings import Settings
from bot.redis_conn import find_redis_server


def redis_server_binary() -> str:
    """The same binary the embedded default would start (valkey-server or redis-server from PATH)."""
    return find_redis_server(Settings(_env_file=None))  # type: ignore[call-arg]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.binary = redis_server_binary()
        self._dir = tempfile.TemporaryDirectory(prefix="deskmate-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 10.0) -> None:
        if self.running:
            return
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir.name,
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(f"redis-server exited with {self._process.returncode}: {err}")
            if self._ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout_s}s")

    def stop(self) -> None:
        """Kill the server (connections drop at once); :meth:`start` brings it back on the same port."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        if self._process.stderr:
            self._process.stderr.close()
        self._process = None

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@contextmanager
def start_redis_server(port: int | None = None) -> Iterator[RedisServer]:
    """A running :class:`RedisServer` for the block (``.url`` to connect), stopped and cleaned up after."""
    server = RedisServer(port)
    server.start()
    try:
        yield server
    finally:
        server.close()
