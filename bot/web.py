"""The web process (aiohttp): health, readiness, the local chat page, and the chat surfaces' endpoints.

Chat surfaces and operator pages plug in through :data:`SURFACES`: each named module exposes
``setup(app, runtime)`` and adds its routes when it is configured (Slack with a signing secret, Teams at
``/api/messages``, metrics). The admin dashboard (a playbook) gets only what it uses, a
:class:`~playbooks.dashboard.DashboardDeps`. Handlers only verify, record, enqueue and acknowledge: the slow
work happens in the worker.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

from aiohttp import web

from bot.core.log import get_logger
from bot.core.settings import Settings
from bot.runtime import Runtime, build_runtime, freeze_heap
from knowledge.config import KnowledgeConfig
from knowledge.index import IndexStore
from playbooks import dashboard
from playbooks.dashboard import DashboardDeps

log = get_logger(__name__)

RUNTIME_KEY = web.AppKey("runtime", Runtime)

#: The plugin point of the web process: modules that add their routes with ``setup(app, runtime)`` (each one
#: decides from the settings whether it is configured). Imported by name, because they import
#: :func:`runtime_of` from here.
SURFACES = ("bot.local_chat.web", "bot.slack.http", "bot.teams.http", "bot.metrics")


def runtime_of(request: web.Request) -> Runtime:
    return request.app[RUNTIME_KEY]


async def healthz(_request: web.Request) -> web.Response:
    """Liveness: the process serves requests. Deliberately touches nothing else."""
    return web.json_response({"status": "ok"})


async def _check(name: str, coro: Any, results: dict[str, str]) -> None:
    try:
        await asyncio.wait_for(coro, timeout=2.0)
        results[name] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        results[name] = f"error: {exc.__class__.__name__}: {exc}"[:200]


async def readyz(request: web.Request) -> web.Response:
    """Readiness: Redis answers, the database answers and accepts writes, the index is there."""
    rt = runtime_of(request)
    results: dict[str, str] = {}

    async def index_ping() -> None:
        store = IndexStore(KnowledgeConfig.from_settings(rt.settings))
        if store.latest_version(rt.settings.kb_name) is None:
            raise LookupError(f"no index for knowledge base '{rt.settings.kb_name}'")
        if rt.settings.chroma_url:
            await asyncio.to_thread(store.ping)

    await asyncio.gather(_check("redis", rt.redis.ping(), results), _check("database", rt.db.check_writable(), results),
                         _check("index", index_ping(), results))
    ok = all(v == "ok" for v in results.values())
    return web.json_response({"status": "ready" if ok else "not ready", "checks": results}, status=200 if ok else 503)


def create_app(rt: Runtime, surfaces: tuple[str, ...] = SURFACES) -> web.Application:
    app = web.Application(client_max_size=2 * 1024 * 1024)
    app[RUNTIME_KEY] = rt
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    for name in surfaces:
        importlib.import_module(name).setup(app, rt)
    dashboard.setup(app, DashboardDeps(settings=rt.settings, db=rt.db, redis=rt.redis))
    return app


async def serve(settings: Settings, *, runtime: Runtime | None = None) -> tuple[web.AppRunner, Runtime]:
    """Start the web server; returns the runner (call ``cleanup()``) and the runtime."""
    rt = runtime or await build_runtime(settings, worker=False)
    app = create_app(rt)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.web_host, settings.web_port)
    await site.start()
    log.info("web.listening", url=f"http://{settings.web_host}:{settings.web_port}")
    return runner, rt


async def run_web(settings: Settings) -> None:
    runner, rt = await serve(settings)
    log.info("web.heap_frozen", objects=freeze_heap())  # see bot.runtime.freeze_heap
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await rt.aclose()
