"""A git server over HTTP on 127.0.0.1: the real ``git http-backend`` (git's own smart-HTTP server, run as a CGI
program) behind HTTP basic authentication, as GitHub and GitLab serve clones to a token.

    with start_git_http(projects_root, username="x-access-token", token="s3cret") as server:
        url = server.url("handbook.git")   # http://127.0.0.1:<port>/handbook.git

A request without the right ``Authorization: Basic`` header is answered ``401`` with ``WWW-Authenticate`` (git then
gives up: the connector never lets it prompt). ``server.requests`` records (method, path, authorised).
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlsplit

from tests.fakes.http_server import serving


@dataclass
class GitHttpServer:
    root: Path
    username: str
    token: str
    port: int = 0
    requests: list[tuple[str, str, bool]] = field(default_factory=list)

    def url(self, repository: str) -> str:
        return f"http://127.0.0.1:{self.port}/{repository}"


def _handler(server: GitHttpServer) -> type[BaseHTTPRequestHandler]:
    expected = "Basic " + base64.b64encode(f"{server.username}:{server.token}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            authorised = self.headers.get("Authorization") == expected
            server.requests.append((self.command, parts.path, authorised))
            if not authorised:
                body = b"Authentication required\n"
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            length = int(self.headers.get("Content-Length") or 0)
            env = {**os.environ, "GIT_PROJECT_ROOT": str(server.root), "GIT_HTTP_EXPORT_ALL": "1",
                   "REQUEST_METHOD": self.command, "PATH_INFO": parts.path, "QUERY_STRING": parts.query,
                   "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(length),
                   "REMOTE_USER": server.username, "REMOTE_ADDR": "127.0.0.1",
                   "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                   "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", "")}
            done = subprocess.run(["git", "http-backend"], input=self.rfile.read(length) if length else b"",
                                  env=env, capture_output=True, check=False)
            head, _, body = done.stdout.partition(b"\r\n\r\n")
            status, headers = 200, []
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.strip().split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = _serve
        do_POST = _serve

    return Handler


@contextmanager
def start_git_http(root: Path, *, username: str, token: str) -> Iterator[GitHttpServer]:
    server = GitHttpServer(root=root, username=username, token=token)
    with serving(_handler(server)) as port:
        server.port = port
        yield server
