"""Prometheus metrics: ``GET /metrics`` on the web process and, with ``DESKMATE_WORKER_METRICS_PORT``, on each worker.

Two kinds of figures, on purpose:

- **Process-local** (prometheus-client histograms and counters): what only this process sees — the web
  process's request and ack latency per route and platform (a middleware), a worker's answer latency per stage
  and the tokens and dollars it spent (an ``after_answer`` hook). Prometheus adds them up across processes.
- **Shared state, read on scrape** (:class:`StateCollector`): what every process must agree on — answers by
  status, 👍/👎, queue depth and the oldest job's age, pending questions, answers not yet delivered (and deliveries
  given up, failed delivery attempts), fallback / not-found / error rates over the last hour, the circuit
  breaker, the active release, kill-switch modes, today's spend against the budget.
  Read from the database and Redis at most every ``DESKMATE_METRICS_CACHE_S``, so they are identical on every
  process: aggregate them with ``max()``, never ``sum()``.

``/healthz`` and ``/readyz`` stay cheap: nothing here runs on them.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Protocol

from aiohttp import web
from arq.constants import default_queue_name
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from bot.breaker import CircuitBreaker
from bot.core.clock import utcnow
from bot.core.log import get_logger
from bot.core.settings import Settings
from bot.core.types import Answer, Status
from feedback.db import Database
from feedback.stats import totals
from playbooks.killswitch import GLOBAL_SCOPE, is_expired, list_switches
from feedback.releases import active_release
from playbooks.status import spend_today, window_stats

log = get_logger(__name__)

#: The circuit breaker the answer engine uses (bot.answering.BREAKER_NAME; literal so the web process stays light).
BREAKER_NAME = "anthropic"
BREAKER_STATES = ("closed", "half_open", "open")
KILLSWITCH_MODES = ("on", "retrieval-only", "off")

_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_STAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)

# --- process-local metrics (the default registry, one set per process) ---------------------------------
HTTP_LATENCY = Histogram(
    "deskmate_http_request_duration_seconds", "Web requests, by route, platform, method and status class.",
    ["platform", "route", "method", "status"], buckets=_HTTP_BUCKETS,
)
ACK_LATENCY = Histogram(
    "deskmate_ack_duration_seconds",
    "Time to acknowledge an incoming chat event (the adapters' POST handlers), by platform.",
    ["platform"], buckets=_HTTP_BUCKETS,
)
STAGE_LATENCY = Histogram(
    "deskmate_answer_stage_seconds",
    "Answer latency per pipeline stage (rewrite, retrieve, generate, deliver, total_before_delivery) in this "
    "worker.",
    ["stage"], buckets=_STAGE_BUCKETS,
)
WORKER_ANSWERS = Counter(
    "deskmate_worker_answers", "Answers this worker finished, by status and whether it was the extractive fallback.",
    ["status", "fallback"],
)
LLM_TOKENS = Counter("deskmate_llm_tokens", "LLM tokens this worker used, by model and kind.", ["model", "kind"])
LLM_COST = Counter("deskmate_llm_cost_usd", "LLM spend of this worker in US dollars, by model.", ["model"])

#: Route prefixes → platform label. A POST to a chat platform's route is that platform's "ack".
_PLATFORM_PREFIXES = (("/slack/", "slack"), ("/api/messages", "teams"), ("/chat", "local"),
                      ("/dashboard", "dashboard"), ("/metrics", "ops"), ("/healthz", "ops"), ("/readyz", "ops"))
ACK_PLATFORMS = ("slack", "teams", "local")


def platform_of(route: str) -> str:
    for prefix, platform in _PLATFORM_PREFIXES:
        if route.startswith(prefix):
            return platform
    return "other"


def route_of(request: web.Request) -> str:
    """The route's template (``/chat/api/interactions/{id}``), never the raw path: labels stay few."""
    info = request.match_info
    resource = info.route.resource if info is not None and info.route is not None else None
    if resource is None or getattr(info, "http_exception", None) is not None:
        return "unmatched"
    return resource.canonical


@web.middleware
async def timing_middleware(request: web.Request,
                            handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        elapsed = time.perf_counter() - started
        route = route_of(request)
        platform = platform_of(route)
        HTTP_LATENCY.labels(platform, route, request.method, f"{status // 100}xx").observe(elapsed)
        if request.method == "POST" and platform in ACK_PLATFORMS and route != "unmatched":
            ACK_LATENCY.labels(platform).observe(elapsed)


async def after_answer(interaction_id: int, answer: Answer) -> None:
    """Worker hook (``Runtime.after_answer``): stage latencies, tokens and cost of one finished answer."""
    for stage, ms in (answer.latency_ms or {}).items():
        STAGE_LATENCY.labels(stage).observe(max(0.0, float(ms)) / 1000.0)
    WORKER_ANSWERS.labels(answer.status.value, str(bool(answer.fallback)).lower()).inc()
    model = answer.model or "none"
    usage = answer.usage
    for kind, count in (("input", usage.input_tokens), ("output", usage.output_tokens),
                        ("cache_read", usage.cache_read_tokens), ("cache_write", usage.cache_write_tokens)):
        if count:
            LLM_TOKENS.labels(model, kind).inc(count)
    if answer.cost_usd:
        LLM_COST.labels(model).inc(answer.cost_usd)


# --- shared state, read on scrape ----------------------------------------------------------------------
class StateSource(Protocol):
    """Where the shared figures are read (a process's ``Runtime`` has all three)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def db(self) -> Database: ...

    @property
    def redis(self) -> Redis: ...


#: Figures a chat surface reads from Redis for ``/metrics`` (the Slack inbox's backlog). A surface adds its reader
#: to ``app[SURFACE_FIGURES_KEY]`` as it mounts (:func:`add_surface_figures`); each refresh reads them with the rest.
RedisFigures = Callable[[Redis], Awaitable[list[Metric]]]
SURFACE_FIGURES_KEY = web.AppKey("metrics_surface_figures", list)


def add_surface_figures(app: web.Application, read: RedisFigures) -> None:
    """Have the web process's ``/metrics`` include ``read``'s figures (in whatever order the surfaces mount)."""
    _surface_figures(app).append(read)


def _surface_figures(app: web.Application) -> list[RedisFigures]:
    if SURFACE_FIGURES_KEY not in app:
        app[SURFACE_FIGURES_KEY] = []
    return app[SURFACE_FIGURES_KEY]


class StateCollector(Collector):
    """Figures read from the database and Redis; refreshed (async) by the handler, served (sync) by ``collect``.

    prometheus-client collects synchronously, so the /metrics handler first awaits :meth:`refresh`, which
    re-reads at most every ``cache_s`` seconds (one refresh at a time), and ``collect`` serves that snapshot.
    A source that cannot be read is reported as ``deskmate_state_up{source=…} 0`` instead of failing the scrape.
    """

    def __init__(self, rt: StateSource, cache_s: float | None = None,
                 surface_figures: list[RedisFigures] | None = None) -> None:
        self.rt = rt
        self.surface_figures = surface_figures if surface_figures is not None else []
        self.cache_s = rt.settings.metrics_cache_s if cache_s is None else cache_s
        self._families: list[Metric] = []
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        return list(self._families)

    async def refresh(self) -> None:
        if time.monotonic() - self._read_at < self.cache_s:
            return
        async with self._lock:
            if time.monotonic() - self._read_at < self.cache_s:
                return
            families: list[Metric] = []
            up = GaugeMetricFamily("deskmate_state_up", "1 when the source could be read at the last refresh.",
                                   labels=["source"])
            for source, read in (("database", self._read_database), ("redis", self._read_redis)):
                try:
                    families += await asyncio.wait_for(read(), timeout=5.0)
                    up.add_metric([source], 1)
                except Exception as exc:  # noqa: BLE001 - a scrape must still answer
                    log.warning("metrics.state_read_failed", source=source, error=repr(exc)[:200])
                    up.add_metric([source], 0)
            families.append(up)
            self._families = families
            self._read_at = time.monotonic()

    async def _read_redis(self) -> list[Metric]:
        redis = self.rt.redis
        now_ms = int(time.time() * 1000)
        # a job's score is when it is due: later scores are deferred (retry back-off, the sweeper's next run)
        total = await redis.zcard(default_queue_name)
        depth = await redis.zcount(default_queue_name, "-inf", now_ms)
        oldest = await redis.zrangebyscore(default_queue_name, "-inf", now_ms, start=0, num=1, withscores=True)
        age = max(0.0, (now_ms - float(oldest[0][1])) / 1000.0) if oldest else 0.0
        breaker = await CircuitBreaker(redis, BREAKER_NAME).state()
        queue = GaugeMetricFamily("deskmate_queue_depth", "Jobs due in the arq queue (waiting or running).")
        queue.add_metric([], depth)
        deferred = GaugeMetricFamily("deskmate_queue_deferred_jobs",
                                     "Jobs in the arq queue due later (retries, scheduled sweeps).")
        deferred.add_metric([], max(0, total - depth))
        job_age = GaugeMetricFamily("deskmate_queue_oldest_job_age_seconds",
                                    "Age of the oldest job in the arq queue (0 when empty).")
        job_age.add_metric([], round(age, 3))
        state = GaugeMetricFamily("deskmate_breaker_state", "1 for the circuit breaker's current state.",
                                  labels=["breaker", "state"])
        for name in BREAKER_STATES:
            state.add_metric([BREAKER_NAME, name], 1 if name == breaker else 0)
        families: list[Metric] = [queue, deferred, job_age, state]
        for read in self.surface_figures:
            families += await read(redis)
        return families

    async def _read_database(self) -> list[Metric]:
        settings = self.rt.settings
        now = utcnow()
        async with self.rt.db.asession() as session:
            counted = await totals(session)
            hour = await window_stats(session, now - timedelta(hours=1))
            spent = await spend_today(session, now)
            release = await active_release(session, settings)
            switches = await list_switches(session)

        answers = CounterMetricFamily("deskmate_answers", "Questions that reached a final status, from the database.",
                                      labels=["platform", "status", "fallback"])
        pending = 0
        for row in counted.by_status:
            if row.status == Status.PENDING:
                pending += row.count
            else:
                answers.add_metric([row.platform, row.status, str(row.fallback).lower()], row.count)
        pending_g = GaugeMetricFamily("deskmate_pending_questions", "Questions recorded and not answered yet.")
        pending_g.add_metric([], pending)
        pending_age = GaugeMetricFamily("deskmate_oldest_pending_question_age_seconds",
                                        "Age of the oldest unanswered question (0 when none).")
        pending_age.add_metric([], round(_age_s(counted.oldest_pending_at, now), 3))
        delivery = counted.delivery
        undelivered = GaugeMetricFamily("deskmate_answers_undelivered",
                                        "Answers recorded but not yet delivered to Slack/Teams (delivery retried).")
        undelivered.add_metric([], delivery.undelivered)
        undelivered_age = GaugeMetricFamily("deskmate_oldest_undelivered_answer_age_seconds",
                                            "Age of the oldest answer not yet delivered (0 when none).")
        undelivered_age.add_metric([], round(_age_s(delivery.oldest_undelivered_at, now), 3))
        delivery_failed = CounterMetricFamily(
            "deskmate_answers_delivery_failed",
            "Answers whose delivery was given up (a permanent error, or still failing at the delivery deadline).")
        delivery_failed.add_metric([], delivery.failed)
        failed_attempts = CounterMetricFamily(
            "deskmate_delivery_failed_attempts", "Delivery attempts that failed (each retried, or given up).")
        failed_attempts.add_metric([], delivery.failed_attempts)
        vote_g = GaugeMetricFamily("deskmate_feedback_votes", "Current 👍/👎 votes (a changed vote moves).",
                                   labels=["label"])
        for label in ("up", "down"):
            vote_g.add_metric([label], counted.votes.get(label, 0))
        rates = GaugeMetricFamily("deskmate_answer_rate_1h",
                                  "Over answers finished in the last hour: fallback (LLM answers that fell back), "
                                  "not_found (of answers) and error (of questions) rates.", labels=["kind"])
        rates.add_metric(["fallback"], round(hour.fallback_rate, 4))
        not_found = hour.by_status.get(Status.NOT_FOUND, 0)
        rates.add_metric(["not_found"], round(not_found / hour.answered, 4) if hour.answered else 0.0)
        rates.add_metric(["error"], round(hour.error_rate, 4))
        hour_g = GaugeMetricFamily("deskmate_answers_1h", "Questions finished in the last hour.")
        hour_g.add_metric([], hour.total)
        spend = GaugeMetricFamily("deskmate_llm_spend_today_usd", "LLM spend since midnight UTC (all workers).")
        spend.add_metric([], round(spent, 6))
        families: list[Metric] = [answers, pending_g, pending_age, undelivered, undelivered_age, delivery_failed,
                                  failed_attempts, vote_g, rates, hour_g, spend]
        if settings.daily_budget_usd is not None:
            budget = GaugeMetricFamily("deskmate_daily_budget_usd", "The daily LLM budget (DESKMATE_DAILY_BUDGET_USD).")
            budget.add_metric([], settings.daily_budget_usd)
            families.append(budget)
        info = GaugeMetricFamily("deskmate_active_release_info", "The active release (value 1).",
                                 labels=["release", "model", "kb", "index_version"])
        info.add_metric([release.name, release.model, release.kb,
                         "latest" if release.index_version is None else str(release.index_version)], 1)
        modes = {s.scope: s.mode for s in switches if not is_expired(s, now)}
        modes.setdefault(GLOBAL_SCOPE, "on")
        switch_g = GaugeMetricFamily("deskmate_killswitch_mode",
                                     "1 for each scope's kill-switch mode (global: every mode listed).",
                                     labels=["scope", "mode"])
        for mode in KILLSWITCH_MODES:
            switch_g.add_metric([GLOBAL_SCOPE, mode], 1 if modes[GLOBAL_SCOPE] == mode else 0)
        for scope, mode in sorted(modes.items()):
            if scope != GLOBAL_SCOPE:
                switch_g.add_metric([scope, mode], 1)
        families += [info, switch_g]
        return families


def _age_s(moment: datetime | None, now: datetime) -> float:
    if moment is None:
        return 0.0
    if moment.tzinfo is None:  # SQLite returns naive UTC
        moment = moment.replace(tzinfo=now.tzinfo)
    return max(0.0, (now - moment).total_seconds())


# --- the endpoint --------------------------------------------------------------------------------------
STATE_KEY = web.AppKey("metrics_state", StateCollector)


def authorized(request: web.Request, token: str | None) -> bool:
    if not token:
        return True
    given = request.headers.get("Authorization", "")
    return given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip().encode(), token.encode())


async def metrics_handler(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if not authorized(request, state.rt.settings.metrics_token):
        return web.Response(status=401, text="unauthorized\n", headers={"WWW-Authenticate": "Bearer"})
    await state.refresh()
    body = generate_latest(REGISTRY) + generate_latest(state.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup(app: web.Application, rt: StateSource) -> None:
    """Web process: ``GET /metrics`` and the request-timing middleware."""
    app[STATE_KEY] = StateCollector(rt, surface_figures=_surface_figures(app))
    app.middlewares.append(timing_middleware)
    app.router.add_get("/metrics", metrics_handler)


async def start_worker_metrics(rt: StateSource, routes: Iterable[web.RouteDef] = ()) -> web.AppRunner | None:
    """A worker's ``/metrics`` server on ``web_host:worker_metrics_port`` (None when the port is 0), with the
    worker's own ``routes`` (its ``/healthz`` and ``/readyz``)."""
    port = rt.settings.worker_metrics_port
    if not port:
        return None
    app = web.Application()
    app[STATE_KEY] = StateCollector(rt)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, rt.settings.web_host, port).start()
    log.info("worker.metrics_listening", url=f"http://{rt.settings.web_host}:{port}/metrics")
    return runner
