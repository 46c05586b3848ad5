"""A running Deskmate for tests: the web server and an arq worker in the test's event loop, on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from aiohttp import web

from bot.core.settings import Settings
from bot.core.types import FINAL_STATUSES
from bot.runtime import Runtime, build_runtime
from bot.web import create_app
from bot.worker import build_worker
from feedback.db import Database
from feedback.models import Interaction


@dataclass
class Stack:
    settings: Settings
    web_runtime: Runtime
    url: str
    worker: Any
    client: httpx.AsyncClient

    @property
    def db(self) -> Database:
        return self.web_runtime.db

    async def wait_final(self, interaction_id: int, timeout_s: float = 30.0) -> Interaction:
        return await wait_final(self.db, interaction_id, timeout_s)

    async def interactions(self) -> list[Interaction]:
        from sqlmodel import col, select

        async with self.db.asession() as session:
            return list((await session.exec(select(Interaction).order_by(col(Interaction.id)))).all())


async def wait_final(db: Database, interaction_id: int, timeout_s: float = 30.0) -> Interaction:
    deadline = time.monotonic() + timeout_s
    while True:
        async with db.asession() as session:
            row = await session.get(Interaction, interaction_id)
        if row is not None and row.status in FINAL_STATUSES:
            return row
        if time.monotonic() > deadline:
            raise TimeoutError(f"interaction {interaction_id} still {row.status if row else 'missing'}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[Any]:
    worker = build_worker(settings, handle_signals=False)
    task = asyncio.create_task(worker.main())
    try:
        # wait until the worker's runtime is built (on_startup ran)
        deadline = time.monotonic() + 60
        while "pipeline" not in worker.ctx and not task.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if task.done():
            task.result()
        yield worker
    finally:
        # let jobs still running finish, so none is cancelled mid-answer or lands in the next test
        deadline = time.monotonic() + 15
        while getattr(worker, "job_tasks", None) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


@contextlib.asynccontextmanager
async def running_stack(settings: Settings, *, worker: bool = True) -> AsyncIterator[Stack]:
    rt = await build_runtime(settings, worker=False)
    from bot.tracing import Tracer

    rt.tracer = Tracer(settings)
    app = create_app(rt)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    async with contextlib.AsyncExitStack() as exits:
        worker_obj = await exits.enter_async_context(running_worker(settings)) if worker else None
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            try:
                yield Stack(settings=settings, web_runtime=rt, url=url, worker=worker_obj, client=client)
            finally:
                pass
    await runner.cleanup()
    await rt.aclose()
