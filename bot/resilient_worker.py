"""The arq worker Deskmate runs: it rides out a Redis outage, and holds each running job by a short lease.

arq 0.28's :class:`~arq.worker.Worker` has two habits a support bot cannot keep:

- **A Redis error ends the process.** ``Worker.main`` polls the queue in a loop; a ``ConnectionError`` from the
  poll (``zrangebyscore``), from claiming a job (``start_jobs``), from the heart-beat and cron enqueueing, or from
  a job's own bookkeeping (``run_job``, ``finish_job``, re-raised by the poll through ``task.result()``) escapes
  ``main``, ``run`` closes the worker and it exits with status 1. :class:`ResilientWorker` catches those errors,
  logs ``worker.redis_lost`` once, retries with backoff (0.5 s doubling to ``worker_redis_retry_max_s``) and logs
  ``worker.redis_back`` when a ping answers. Jobs already running carry on (they mostly need the database and
  the LLM); if Redis is still away when one finishes, arq cannot record it, so the job stays queued, its lease
  lapses and it runs again — the pipeline skips an interaction that is already final. redis-py reconnects on
  the next command, so the arq pool (``ctx['redis']``) and the runtime's own client (``rt.redis``) both come
  back by themselves once the server answers; nothing has to be rebuilt. The state is on the worker's metrics
  server: ``/readyz`` (503 while Redis is lost) and ``deskmate_worker_redis_connected``.
- **A dead worker's job waits for the job timeout + 10 s.** arq marks a running job with
  ``arq:in-progress:<job id>``, set for (the longest function timeout + 10 s) and deleted when the job
  finishes; until that key expires no other worker takes the job. Here the key is set for ``worker_lease_s``
  instead and renewed every ``worker_lease_renew_s`` while the job runs (every job: answers, cron jobs,
  deliveries), so a killed worker's job is taken by another one within a lease. One task renews every running
  job's lease in one round trip (a pipeline of ``PEXPIRE``). A job's renewal stops before arq finishes the job
  (``finish_job`` deletes the key, or keeps a cron job's for a minute), so it never puts a finished job's key back.

Claiming a job costs one round trip per poll, not five per listed job (:meth:`ResilientWorker.start_jobs`): one
Lua script does arq's checks and claim for all the jobs the poll listed (``bench/bench_queue.py`` counts it).

``deskmate worker`` runs this one. (There is deliberately no ``WorkerSettings`` class for arq's own command line:
it would build arq's plain ``Worker``, which has neither.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from arq.constants import in_progress_key_prefix
from arq.connections import ArqRedis, create_pool
from arq.utils import timestamp_ms
from arq.worker import Worker
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from bot.core.log import get_logger

log = get_logger(__name__)

#: What a lost Redis raises: redis-py's errors, and the OS's (refused, reset, timed out) from a raw socket.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)
FIRST_RETRY_S = 0.5

REDIS_CONNECTED = Gauge("deskmate_worker_redis_connected",
                        "1 while this worker reaches Redis (its queue), 0 while it is riding out an outage.",
                        ["queue"])
REDIS_OUTAGES = Counter("deskmate_worker_redis_outages", "Times this worker lost Redis.", ["queue"])
LEASES_LOST = Counter("deskmate_worker_leases_lost",
                            "Running jobs whose lease lapsed (Redis away longer than a lease) and was already "
                            "taken by another worker.", ["queue"])

#: Claims ready jobs for this worker in one round trip, with arq's checks. KEYS: the queue, then the candidates'
#: in-progress keys; ARGV: now (ms), the lease (ms), how many to claim at most, then the candidates' ids (as
#: listed by the poll, oldest first). Returns the claimed jobs as id, score, id, score, ….
CLAIM_SCRIPT = """
local claimed, limit, now = {}, tonumber(ARGV[3]), tonumber(ARGV[1])
for i = 2, #KEYS do
  if #claimed >= 2 * limit then break end
  local job_id = ARGV[i + 2]
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local score = redis.call('ZSCORE', KEYS[1], job_id)
    if score and tonumber(score) <= now then
      redis.call('PSETEX', KEYS[i], ARGV[2], '1')
      claimed[#claimed + 1] = job_id
      claimed[#claimed + 1] = score
    end
  end
end
return claimed
"""


@dataclass
class RedisState:
    """Whether the worker reaches Redis, and since when (monotonic seconds)."""

    connected: bool = True
    changed_at: float = 0.0
    error: str = ""
    outages: int = 0

    def describe(self) -> str:
        if self.connected:
            return "ok"
        return f"error: Redis lost {time.monotonic() - self.changed_at:.1f} s ago: {self.error}"[:200]


class ResilientWorker(Worker):
    """arq's Worker, kept alive through Redis outages and holding running jobs by a renewed lease.

    ``lease_s`` replaces arq's in-progress timeout; ``lease_renew_s`` must be well under it (a third or less).
    """

    def __init__(self, *args: Any, lease_s: float = 15.0, lease_renew_s: float = 5.0,
                 redis_retry_max_s: float = 5.0,
                 prepare_pool: Callable[[ArqRedis], Awaitable[ArqRedis]] | None = None, **kwargs: Any) -> None:
        if not 0 < lease_renew_s < lease_s:
            raise ValueError(f"the lease renewal interval ({lease_renew_s} s) must be shorter than the lease "
                             f"({lease_s} s)")
        super().__init__(*args, **kwargs)
        self.lease_s = lease_s
        self.lease_renew_s = lease_renew_s
        self.redis_retry_max_s = max(FIRST_RETRY_S, redis_retry_max_s)
        #: applied to arq's pool once connected (``deskmate worker``: read timeouts, bot.redis_conn.bound_reads)
        self.prepare_pool = prepare_pool
        # arq claims a job with psetex(in-progress key, in_progress_timeout_s): claim it for one lease instead
        self.in_progress_timeout_s = lease_s
        self.redis_state = RedisState(changed_at=time.monotonic())
        self.ctx["redis_state"] = self.redis_state
        self._leased: set[str] = set()  # the running jobs whose lease this worker renews
        self._lease_lock = asyncio.Lock()
        self._renewer: asyncio.Task[None] | None = None
        self._claim: AsyncScript | None = None
        self._retry_s = FIRST_RETRY_S
        REDIS_CONNECTED.labels(self.queue_name).set(1)

    # --- Redis outages ------------------------------------------------------------------------------
    async def main(self) -> None:
        if self._pool is None:
            self._pool = await self._connect()
        await super().main()

    async def _connect(self) -> ArqRedis:
        """arq's pool, waiting with backoff while Redis does not answer (a worker started during an outage)."""
        assert self.redis_settings is not None
        while True:
            try:
                pool = await create_pool(self.redis_settings, retry=self.redis_settings.conn_retries,
                                         job_deserializer=self.job_deserializer, job_serializer=self.job_serializer,
                                         default_queue_name=self.queue_name, expires_extra_ms=self.expires_extra_ms)
                return await self.prepare_pool(pool) if self.prepare_pool is not None else pool
            except REDIS_ERRORS as exc:
                self._lost(exc)
                await asyncio.sleep(self._backoff())

    async def _poll_iteration(self) -> None:
        if not self.redis_state.connected:
            try:
                await self.pool.ping()
                await self._renew_all()
            except REDIS_ERRORS as exc:
                self._lost(exc)
                await asyncio.sleep(self._backoff())
                return
            self._back()
        try:
            await super()._poll_iteration()
        except REDIS_ERRORS as exc:
            self._lost(exc)
            await asyncio.sleep(self._backoff())

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Claim the poll's ready jobs in one round trip (:data:`CLAIM_SCRIPT`), then start them as arq does.

        arq claims each listed job on its own — ``WATCH``, ``EXISTS``, ``ZSCORE``, ``MULTI``/``PSETEX``/``EXEC``,
        ``UNWATCH``: five round trips — and lists the jobs that are running too (they stay in the queue until they
        finish), so every poll re-checked every running job. Here the jobs this worker runs are skipped locally and
        the rest are checked and claimed by one script, atomically: the same checks (no in-progress key, still in
        the queue, due), the same claim (the in-progress key, for one lease). A Redis error claims nothing."""
        free = self.max_jobs - self.job_counter
        candidates = []
        for job_id_b in job_ids:
            job_id = job_id_b.decode()
            task = self.tasks.get(job_id)
            if task is None or task.done():  # a task of ours that is done may be a job to run again (a retry)
                candidates.append(job_id)
        if free <= 0 or not candidates:
            return
        if self._claim is None:
            self._claim = self.pool.register_script(CLAIM_SCRIPT)
        claimed = await self._claim(
            keys=[self.queue_name, *(in_progress_key_prefix + job_id for job_id in candidates)],
            args=[timestamp_ms(), int(self.lease_s * 1000), free, *candidates])
        for i in range(0, len(claimed), 2):
            job_id, score = _text(claimed[i]), int(float(_text(claimed[i + 1])))
            await self.sem.acquire()  # never waits: at most `free` jobs are claimed
            self.job_counter += 1
            task = self.loop.create_task(self.run_job(job_id, score))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task

    async def run_job(self, job_id: str, score: int) -> None:
        self._leased.add(job_id)
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_leases(), name="leases")
        try:
            await super().run_job(job_id, score)
        except REDIS_ERRORS as exc:
            # arq could not read or record the job: it stays queued, its lease lapses and it runs again (an
            # answer already recorded is skipped). Not re-raised: arq's poll would end the worker with it.
            self._lost(exc)
            log.warning("worker.job_unrecorded", job_id=job_id, error=repr(exc)[:200])
        finally:
            await self._release_lease(job_id)

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.wait([self._renewer])
        try:
            await super().close()
        except REDIS_ERRORS as exc:  # stopping while Redis is away (arq's close deletes its health key first)
            log.warning("worker.closed_without_redis", error=repr(exc)[:200])
            if self.on_shutdown:
                await self.on_shutdown(self.ctx)
            pool, self._pool = self._pool, None
            if pool is not None:
                with contextlib.suppress(Exception):
                    await pool.aclose(close_connection_pool=True)

    def _lost(self, exc: BaseException) -> None:
        state = self.redis_state
        state.error = f"{exc.__class__.__name__}: {exc}"[:200]
        if state.connected:
            state.connected, state.changed_at = False, time.monotonic()
            state.outages += 1
            REDIS_CONNECTED.labels(self.queue_name).set(0)
            REDIS_OUTAGES.labels(self.queue_name).inc()
            log.error("worker.redis_lost", error=state.error, running_jobs=len(self.tasks))

    def _back(self) -> None:
        state = self.redis_state
        down_s = time.monotonic() - state.changed_at
        state.connected, state.changed_at, state.error = True, time.monotonic(), ""
        self._retry_s = FIRST_RETRY_S
        REDIS_CONNECTED.labels(self.queue_name).set(1)
        log.info("worker.redis_back", down_s=round(down_s, 1), running_jobs=len(self.tasks))

    def _backoff(self) -> float:
        wait, self._retry_s = self._retry_s, min(self.redis_retry_max_s, self._retry_s * 2)
        return wait

    # --- leases ---------------------------------------------------------------------------------------
    async def _renew_leases(self) -> None:
        """One task for every running job: each ``lease_renew_s`` their leases are renewed in one round trip."""
        while True:
            await asyncio.sleep(self.lease_renew_s)
            try:
                await self._renew_all()
            except REDIS_ERRORS:
                continue  # the poll loop reports the outage (and renews every lease when Redis is back)

    async def _renew_all(self) -> None:
        """Extend the lease of every running job (a pipeline of ``PEXPIRE``), and take back a lapsed one.

        Holds :attr:`_lease_lock`: a finishing job waits for a renewal under way (:meth:`_release_lease`), so a
        renewal never puts a finished job's key back."""
        async with self._lease_lock:
            job_ids = sorted(self._leased)
            if not job_ids:
                return
            lease_ms = int(self.lease_s * 1000)
            async with self.pool.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.pexpire(in_progress_key_prefix + job_id, lease_ms)
                renewed = await pipe.execute()
            for job_id, ok in zip(job_ids, renewed):
                if ok or job_id not in self._leased:
                    continue
                # the key is gone while the job still runs: it lapsed during a Redis outage longer than a lease (or
                # the server restarted empty). Take it back, unless another worker already has the job: then both
                # run it.
                if not await self.pool.set(in_progress_key_prefix + job_id, b"1", px=lease_ms, nx=True):
                    self._leased.discard(job_id)  # not renewed any more: the lease is the other worker's
                    LEASES_LOST.labels(self.queue_name).inc()
                    log.warning("worker.lease_lost", job_id=job_id)

    async def _release_lease(self, job_id: str) -> None:
        """Stop renewing the job's lease, after a renewal under way has finished."""
        if job_id in self._leased:
            self._leased.discard(job_id)
            if self._lease_lock.locked():
                async with self._lease_lock:
                    pass

    async def finish_job(self, job_id: str, *args: Any, **kwargs: Any) -> None:
        await self._release_lease(job_id)  # before arq deletes (or, for a cron job, keeps) the key
        await super().finish_job(job_id, *args, **kwargs)

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        await self._release_lease(job_id)
        await super().finish_failed_job(job_id, result_data)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- health on the worker's metrics server -------------------------------------------------------------
async def _check(coro: Any) -> str:
    try:
        await asyncio.wait_for(coro, timeout=2.0)
        return "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return f"error: {exc.__class__.__name__}: {exc}"[:200]


def health_routes(state: RedisState, redis: Redis) -> list[web.RouteDef]:
    """``/healthz`` (the process serves) and ``/readyz`` for the worker's metrics server.

    ``/readyz`` answers 503 while the worker's queue connection is lost (``checks.queue``) or the runtime's Redis
    client does not answer a ping (``checks.redis``), like the web process's ``/readyz``.
    """

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        checks = {"queue": state.describe(), "redis": await _check(redis.ping())}
        ok = all(v == "ok" for v in checks.values())
        return web.json_response({"status": "ready" if ok else "not ready", "checks": checks},
                                 status=200 if ok else 503)

    return [web.get("/healthz", healthz), web.get("/readyz", readyz)]
