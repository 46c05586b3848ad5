"""A running Deskmate for tests: the web server and an arq worker in the test's event loop, on free ports.

Waiting without fixed sleeps — each helper returns on a positive signal that the work has finished:

- :meth:`Stack.wait_final` — the interaction's answer job has finished (arq's ``Job.result``): recorded,
  delivered and the after-answer hooks run, not just "the row turned final" (which happens before delivery);
- :meth:`Stack.settle` — every request sent so far has been processed (the Slack inbox is empty, bolt's listener
  tasks are done) and the worker has nothing queued or running: assert "nothing happened" after this, not after a sleep;
- :func:`drain` — a worker in arq burst mode: runs every queued job to completion, then stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus, ResultNotFound
from redis.asyncio import Redis
from redis.exceptions import RedisError
from arq.worker import Worker

from bot.core.settings import Settings
from bot.core.types import FINAL_STATUSES
from bot.queue import job_id
from bot.runtime import Runtime, build_runtime
from bot.slack.inbox import STREAM as INBOX_STREAM
from bot.web import create_app
from bot.worker import build_worker, startup
from feedback.db import Database
from feedback.models import Interaction
from tests.waiting import wait_until

#: The coroutine slack-bolt runs each listener in, started before the request is answered (see settle_listeners).
BOLT_LISTENER_TASK = "run_ack_function_asynchronously"
POLL_S = 0.02
ANSWER_JOB_PREFIX = job_id("").encode()


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
        """The interaction once its answer job has finished (answer recorded, delivered, hooks run)."""
        return await wait_final(self.db, interaction_id, timeout_s, redis=self.web_runtime.redis)

    async def settle(self, timeout_s: float = 30.0) -> None:
        """Every request sent so far has been fully processed, and the worker has nothing queued or running.

        Use this before asserting that a request did *not* lead to anything (no question recorded, nothing
        posted): it returns when the work is done, however slow the machine, instead of hoping a sleep was enough.
        """
        await inbox_drained(self.web_runtime.redis, timeout_s)
        await settle_listeners(timeout_s)
        if self.worker is not None:
            await queue_drained(self.web_runtime.redis, timeout_s)

    async def row(self, interaction_id: int) -> Interaction:
        """The interaction as recorded now."""
        row = await _row(self.db, interaction_id)
        assert row is not None, f"interaction {interaction_id} is not recorded"
        return row

    async def wait_row(self, interaction_id: int, predicate: Callable[[Interaction], bool],
                       timeout_s: float = 30.0) -> Interaction:
        """The interaction once ``predicate`` holds for it (polled; the timeout error says where it stands)."""
        deadline = time.monotonic() + timeout_s
        while True:
            row = await self.row(interaction_id)
            if predicate(row):
                return row
            if time.monotonic() > deadline:
                raise TimeoutError(f"row {row.id}: {row.status}, delivery {row.delivery_state} after "
                                   f"{row.delivery_attempts} attempts ({row.delivery_error})")
            await asyncio.sleep(0.02)

    async def interactions(self) -> list[Interaction]:
        from sqlmodel import col, select

        async with self.db.asession() as session:
            return list((await session.exec(select(Interaction).order_by(col(Interaction.id)))).all())


async def _row(db: Database, interaction_id: int) -> Interaction | None:
    async with db.asession() as session:
        return await session.get(Interaction, interaction_id)


async def wait_final(db: Database, interaction_id: int, timeout_s: float = 30.0, *,
                     redis: ArqRedis | None = None) -> Interaction:
    """The interaction once it is final. With ``redis``, also once its answer job has finished: the row turns
    final before the answer is delivered and the after-answer hooks run; the job's result comes after both."""
    deadline = time.monotonic() + timeout_s
    row = await _row(db, interaction_id)
    if redis is not None and row is not None:
        await _job_finished(db, redis, row, deadline)
    while True:
        row = await _row(db, interaction_id)
        if row is not None and row.status in FINAL_STATUSES:
            return row
        if time.monotonic() > deadline:
            raise TimeoutError(f"interaction {interaction_id} still {row.status if row else 'missing'}")
        await asyncio.sleep(POLL_S)


async def _job_finished(db: Database, redis: ArqRedis, row: Interaction, deadline: float) -> None:
    """Wait for the arq result of ``row``'s answer job (whatever it was, even a failure)."""
    assert row.id is not None
    job = Job(job_id(row.idempotency_key), redis)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            current = await _row(db, row.id)
            raise TimeoutError(f"interaction {row.id}: answer job {await job.status()}, row "
                               f"{current.status if current else 'missing'}")
        try:
            await job.result(timeout=remaining, poll_delay=POLL_S)
            return
        except ResultNotFound:
            # no result and not in the queue: not enqueued yet (Redis was down; the sweeper will), or the row
            # was finished without a job of ours
            current = await _row(db, row.id)
            if current is not None and current.status in FINAL_STATUSES:
                return
            await asyncio.sleep(POLL_S)
        except asyncio.TimeoutError:
            continue  # the deadline check above reports it
        except Exception:  # noqa: BLE001 - the job failed or timed out: it has finished; the row tells how
            return


async def settle_listeners(timeout_s: float = 30.0) -> None:
    """Wait until the listener work slack-bolt started for the requests answered so far has finished.

    bolt acknowledges a request and runs its listener in a task it creates *before* the HTTP response is
    returned, so once a test holds the response, these tasks are all there is left to wait for. (A request
    refused before any listener, e.g. a bad signature, starts none: it was fully handled when answered.)
    """
    from slack_bolt.listener.asyncio_runner import AsyncioListenerRunner

    if BOLT_LISTENER_TASK not in inspect.getsource(AsyncioListenerRunner.run):
        raise RuntimeError(f"slack-bolt no longer runs listeners in {BOLT_LISTENER_TASK}(): update tests/stack.py")
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()
               and BOLT_LISTENER_TASK in getattr(t.get_coro(), "__qualname__", "")]
    if pending:
        done, still = await asyncio.wait(pending, timeout=timeout_s)
        if still:
            raise TimeoutError(f"{len(still)} Slack listener(s) still running after {timeout_s}s")


async def inbox_drained(redis: Redis, timeout_s: float = 30.0) -> None:
    """Wait until the Slack events acknowledged so far have left the inbox (:mod:`bot.slack.inbox`): each has
    been handed to intake, its listener run to the end. Nothing to wait for when Redis is away (then bolt took
    every event in the web process: :func:`settle_listeners`)."""
    async def inbox_empty() -> bool:
        try:
            return not await redis.xlen(INBOX_STREAM)
        except (RedisError, ConnectionError) as exc:  # not TimeoutError (an OSError too): that is the wait's own
            raise _RedisAway from exc

    try:
        await wait_until(inbox_empty, timeout_s=timeout_s, interval_s=POLL_S, what="no Slack event in the inbox")
    except _RedisAway:
        return


class _RedisAway(Exception):
    """Redis could not be asked (:func:`inbox_drained` has nothing to wait for)."""


async def queue_drained(redis: ArqRedis, timeout_s: float = 30.0) -> None:
    """Wait until no answer job is queued, deferred (a retry) or in progress.

    arq keeps a job in its queue until it finishes and removes it in the same transaction that stores the
    result, so no answer job in the queue means every one enqueued so far has run to its end. (The cron jobs —
    the sweeper, the guard — are always scheduled ahead in the queue; they are not answers.)
    """
    answers: list[bytes] = []  # the last look, for the error

    async def no_answer_queued() -> bool:
        answers[:] = [j for j in await redis.zrange("arq:queue", 0, -1) if j.startswith(ANSWER_JOB_PREFIX)]
        return not answers

    try:
        await wait_until(no_answer_queued, timeout_s=timeout_s, interval_s=POLL_S)
    except TimeoutError:
        raise TimeoutError(f"answer jobs still queued or running after {timeout_s}s: {answers}") from None


async def enqueued_job(redis: ArqRedis, key: str, timeout_s: float = 10.0) -> Job:
    """The job ``key`` once it is in Redis: a worker records a failed delivery attempt in the database first and
    enqueues its retry after, so a test that saw the attempt may look a moment too early."""
    job = Job(key, redis)

    async def found() -> bool:
        return await job.status() != JobStatus.not_found

    with contextlib.suppress(TimeoutError):  # not there in time: returned all the same, its status tells
        await wait_until(found, timeout_s=timeout_s, interval_s=POLL_S)
    return job


async def drain(settings: Settings, timeout_s: float = 60.0) -> Worker:
    """Run a real worker (``build_worker``) in arq burst mode: every queued job runs to completion, then the
    worker stops. When this returns, the answers queued before the call are recorded and delivered.

    For a test with no other worker running. Its cron jobs (the sweeper, the guard) are left out — a scheduled
    cron job sits in the queue, so a burst worker with them would never find the queue empty; a test that needs
    the sweeper calls :func:`bot.queue.sweep_pending` first. Returns the worker (``jobs_complete``, ``jobs_failed``).
    """
    worker = build_worker(settings, handle_signals=False, burst=True, cron_jobs=[])
    try:
        await asyncio.wait_for(worker.async_run(), timeout_s)
    finally:
        with contextlib.suppress(Exception):
            await worker.close()
    return worker


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[Any]:
    ready = asyncio.Event()

    async def on_startup(ctx: dict[str, Any]) -> None:
        await startup(ctx)
        ready.set()

    worker = build_worker(settings, handle_signals=False, on_startup=on_startup)
    task = asyncio.create_task(worker.main())
    try:
        # until the worker's runtime is built (on_startup ran), or the worker failed to start
        started = asyncio.create_task(ready.wait())
        await asyncio.wait({started, task}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if task.done():
            task.result()
        if not ready.is_set():
            raise TimeoutError("the worker did not start within 60 s")
        yield worker
    finally:
        # take no new job, and let the running ones finish, so none is cancelled mid-answer (close() cancels)
        # or lands in the next test
        worker.allow_pick_jobs = False
        running = [t for t in worker.tasks.values() if not t.done()]
        if running:
            await asyncio.wait(running, timeout=15)
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


# --- workers as real processes (`deskmate worker`), for tests that kill them or take Redis away ------------
REPO = Path(__file__).resolve().parents[1]


def process_env(settings: Settings, **extra: Any) -> dict[str, str]:
    """The environment that gives a ``deskmate`` subprocess these settings: every field the test set explicitly,
    as ``DESKMATE_*`` variables (lists and dicts as JSON), plus ``extra``; none of the caller's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKMATE_")}
    values = {name: getattr(settings, name) for name in settings.model_fields_set} | extra
    for name, value in sorted(values.items()):
        if value is None:
            continue
        if isinstance(value, (list, dict)):
            text = json.dumps(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[f"DESKMATE_{name.upper()}"] = text
    env["ANONYMIZED_TELEMETRY"] = "False"
    return env


@dataclass
class WorkerProcess:
    """One ``deskmate worker`` subprocess: JSON logs in ``log_path``, ``/metrics``, ``/readyz`` on ``port``."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup — as if the machine died."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                line = json.loads(raw)
                if isinstance(line, dict):
                    lines.append(line)
        return lines

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.log_lines() if line.get("event") == event]

    def handled(self) -> set[int]:
        """Interactions this worker started answering."""
        return {int(line["interaction_id"]) for line in self.events("pipeline.start") if "interaction_id" in line}

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(f"http://127.0.0.1:{self.port}/readyz")
        return response.status_code, (response.json() if response.status_code in (200, 503) else {})

    async def wait_started(self, timeout_s: float = 120.0) -> None:
        """Wait until the worker has started (its runtime built: ``/metrics`` answers); fails if it exits."""
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.alive:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                async with httpx.AsyncClient(timeout=5) as client:
                    if (await client.get(f"http://127.0.0.1:{self.port}/metrics")).status_code == 200:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not start within {timeout_s} s:\n{self.log_tail()}")
            await asyncio.sleep(POLL_S * 5)

    async def wait_readyz(self, status: int = 200, timeout_s: float = 60.0) -> dict[str, Any]:
        """Wait until ``/readyz`` answers ``status``; fails at once if the process exits."""
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.alive:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                code, body = await self.readyz()
                if code == status:
                    return body
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}'s /readyz did not answer {status} within {timeout_s} s")
            await asyncio.sleep(POLL_S * 5)


@contextlib.asynccontextmanager
async def worker_processes(settings: Settings, count: int, log_dir: Path,
                           **extra: Any) -> AsyncIterator[list[WorkerProcess]]:
    """``count`` ``deskmate worker`` processes with ``settings`` (plus ``extra`` settings), each started (its
    ``/metrics`` answers) when the block starts; stopped (SIGTERM, then SIGKILL) after it."""
    from tests.fakes.redis_server import free_port

    workers: list[WorkerProcess] = []
    try:
        for i in range(count):
            port = free_port()
            env = process_env(settings, worker_metrics_port=port, log_format="json", **extra)
            log_path = log_dir / f"worker-{i}.log"
            with open(log_path, "wb") as log:
                proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "worker"], env=env, cwd=REPO,
                                        stdout=log, stderr=subprocess.STDOUT)
            workers.append(WorkerProcess(f"worker-{i}", proc, log_path, port))
        for worker in workers:
            await worker.wait_started()
        yield workers
    finally:
        for worker in workers:
            if worker.alive:
                worker.proc.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
