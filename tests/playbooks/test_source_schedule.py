"""The worker's schedule of knowledge sources: which sources are due, and a tick that starts them each in its
own thread — a slow source and a failing one never hold back a healthy one, a source is never synced twice at
once (a Redis lock shared by workers), and every run is recorded with trigger "schedule"."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from feedback.db import get_database
from feedback.models import SyncRun
from feedback.sync_runs import last_runs
from knowledge.connectors.config import parse_sources
from playbooks.sources import SourceScheduler, due_sources
from tests.conftest import settings_for
from tests.fakes.http_server import serving

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=timezone.utc)


def test_which_sources_are_due() -> None:
    sources = parse_sources([
        {"name": "often", "kind": "folder", "path": "a", "schedule": "every 30m"},
        {"name": "nightly", "kind": "folder", "path": "b", "schedule": "0 2 * * *"},
        {"name": "new", "kind": "folder", "path": "c", "schedule": "@hourly"},
        {"name": "by-hand", "kind": "folder", "path": "d"},
    ])
    last = {"often": SyncRun(source="often", kind="folder", status="ok", started_at=NOW - timedelta(minutes=29)),
            "nightly": SyncRun(source="nightly", kind="folder", status="failed",
                               started_at=NOW - timedelta(hours=9)),
            "by-hand": SyncRun(source="by-hand", kind="folder", status="ok", started_at=NOW - timedelta(days=30))}
    assert [s.name for s in due_sources(sources, last, NOW)] == ["nightly", "new"]
    assert [s.name for s in due_sources(sources, last, NOW + timedelta(minutes=1))] == ["often", "nightly", "new"]


@pytest.fixture
def slow_site() -> Iterator[tuple[str, threading.Event]]:
    """A site whose robots.txt answers only once released: a source stuck on a slow server."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/robots.txt":
                release.wait(60)
                body, ctype = b"User-agent: *\nAllow: /\n", "text/plain"
            elif self.path == "/sitemap.xml":
                body = (f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>{base}/kb/wifi</loc>'
                        "</url></urlset>").encode()
                ctype = "application/xml"
            else:
                body = (b"<html><head><title>Wi-Fi</title></head><body><h1>Wi-Fi</h1><p>The guest network is "
                        b"called Harbour and its password changes every Monday.</p></body></html>")
                ctype = "text/html"
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serving(Handler) as port:
        base = f"http://127.0.0.1:{port}"
        yield base, release
        release.set()


async def wait_for_runs(settings_url: str, names: set[str], timeout: float = 90) -> dict[str, SyncRun]:
    deadline = time.monotonic() + timeout
    db = get_database(settings_url)
    while True:
        with db.session() as session:
            runs = last_runs(session)
        if names <= set(runs):
            return runs
        assert time.monotonic() < deadline, f"runs recorded: {sorted(runs)}, waiting for {sorted(names)}"
        await asyncio.sleep(0.1)


async def test_a_slow_or_failing_source_never_holds_back_the_others(
        tmp_path: Path, redis_url: str, slow_site: tuple[str, threading.Event]) -> None:
    base, release = slow_site
    handbook = tmp_path / "handbook"
    handbook.mkdir()
    (handbook / "vpn.md").write_text("# VPN\n\nOpen NorthGate and sign in with your badge number.\n")
    sources_file = tmp_path / "sources.yaml"
    sources_file.write_text(
        "- {name: fast, kind: folder, path: handbook, schedule: every 1m}\n"
        f"- {{name: slow, kind: website, sitemap: '{base}/sitemap.xml', schedule: every 1m}}\n"
        f"- {{name: broken, kind: git, repository: '{tmp_path / 'no-repo'}', schedule: every 1m}}\n"
        "- {name: by-hand, kind: folder, path: handbook}\n")
    settings = settings_for(tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
                            redis_url=redis_url, sources_file=sources_file)
    url = settings.database_url_resolved()
    get_database(url).migrate()
    redis = aioredis.Redis.from_url(redis_url)
    scheduler = SourceScheduler(settings, redis)
    try:
        assert await scheduler.tick() == ["fast", "slow", "broken"]
        runs = await wait_for_runs(url, {"fast", "broken"})
        assert runs["fast"].status == "ok" and runs["fast"].added == 1 and runs["fast"].trigger == "schedule"
        assert runs["broken"].status == "failed" and "git clone failed" in runs["broken"].errors[0]
        assert "slow" in scheduler.running and "slow" not in runs, "still waiting on its server"

        assert await scheduler.tick() == [], "nothing is due yet, and the slow one is still running"
        other_worker = SourceScheduler(settings, redis)
        later = datetime.now(timezone.utc) + timedelta(minutes=2)
        assert await other_worker.tick(later) == ["fast", "broken"], "the running one is locked in Redis"
        await other_worker.wait()

        release.set()
        await scheduler.wait()
        runs = await wait_for_runs(url, {"slow"})
        assert runs["slow"].status == "ok" and runs["slow"].added == 1
        assert await redis.get("deskmate:source-sync:slow") is None, "the lock is released"
    finally:
        release.set()
        await scheduler.wait()
        await redis.aclose()
