"""The arq worker: answers questions from the queue (``deskmate worker``).

One process holds many answers in flight (``DESKMATE_WORKER_MAX_JOBS``): each job mostly waits on the LLM.
Transient faults are retried with backoff by arq; a job that fails for good records the error and tells the
user in their thread. A cron job sweeps pending questions whose job vanished (e.g. Redis was down); another starts
the knowledge sources' syncs when their schedule is due (:mod:`playbooks.sources`).
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import structlog
from arq import Retry, cron
from arq.worker import Worker, func

from bot import metrics
from bot.core.log import configure_logging, get_logger
from bot.core.settings import Settings, get_settings
from bot.core.types import Platform
from bot.embed_jobs import EMBED_JOB, HELPER_BUDGET_S, embed_help, shared_embedding
from bot.local_chat.live import LocalDeliverer
from bot.pipeline import AnswerPipeline
from bot.queue import (ANSWER_JOB, DELIVER_JOB, DeliveryQueue, delivery_max_tries, sweep_pending,
                       sweep_undelivered)
from bot.redis_conn import bound_reads, redis_settings
from bot.resilient_worker import ResilientWorker, health_routes
from bot.runtime import Runtime, build_runtime, freeze_heap
from bot.slack.delivery import SlackDeliverer, slack_deliverer
from bot.slack.learned import show_due_for_review
from bot.teams.delivery import teams_deliverer
from bot.shadow import SHADOW_JOB, shadow_job
from playbooks.canary import canary_cron
from knowledge.learned_index import refresh_learned
from playbooks.guard import guard_cron
from playbooks.learned import REFRESH_JOB
from playbooks.releases import pinned_index_versions
from playbooks.sources import SourceScheduler

log = get_logger(__name__)


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx.get("settings") or get_settings()
    rt = await build_runtime(settings, worker=True)
    slack = slack_deliverer(settings, rt.redis)
    if slack is not None:
        rt.deliverers[Platform.SLACK] = slack
    rt.deliverers[Platform.TEAMS] = teams_deliverer(settings)
    # live answers for the local chat page and terminal (DESKMATE_STREAMING=off: the whole answer at once)
    rt.deliverers[Platform.LOCAL] = LocalDeliverer(rt.redis, streaming=settings.streaming == "on")
    ctx["runtime"] = rt
    rt.after_answer.append(metrics.after_answer)
    ctx["pipeline"] = rt.answer_pipeline()
    ctx["pipeline"].deliveries = DeliveryQueue(rt.redis)  # a failed first delivery attempt goes to `deliver`
    ctx["guard"] = rt.guard
    ctx["canary"] = rt.canary  # the canary's decision, also by cron (playbooks/canary.py)
    ctx["source_scheduler"] = SourceScheduler(  # the knowledge sources' schedules; a held sync is alerted
        settings, rt.redis, rt.guard.alerter if rt.guard is not None else None,
        embedding=partial(shared_embedding, settings))  # every worker helps embed (bot/embed_jobs.py)
    # /healthz and /readyz next to /metrics (the Redis state is there with deskmate worker's ResilientWorker)
    state = ctx.get("redis_state")
    ctx["metrics_runner"] = await metrics.start_worker_metrics(
        rt, health_routes(state, rt.redis) if state is not None else ())
    frozen = freeze_heap() if ctx.get("freeze_heap") else 0  # `deskmate worker`: see bot.runtime.freeze_heap
    log.info("worker.ready", max_jobs=settings.worker_max_jobs, frozen_objects=frozen)


async def shutdown(ctx: dict[str, Any]) -> None:
    if ctx.get("metrics_runner") is not None:
        await ctx["metrics_runner"].cleanup()
    rt: Runtime | None = ctx.get("runtime")
    if rt is not None:
        await rt.aclose()


async def answer(ctx: dict[str, Any], interaction_id: int) -> str:
    pipeline: AnswerPipeline = ctx["pipeline"]
    settings = pipeline.settings
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(interaction_id=interaction_id, job_try=ctx.get("job_try", 1))
    try:
        result = await pipeline.run(interaction_id)
    except Exception as exc:  # noqa: BLE001 - retried, then recorded and reported to the user
        tries = int(ctx.get("job_try", 1))
        if tries < settings.job_max_tries:
            log.warning("worker.job_retry", error=repr(exc), job_try=tries)
            raise Retry(defer=min(30, 2 ** tries)) from exc
        log.exception("worker.job_failed")
        await pipeline.fail(interaction_id, repr(exc))
        return "error"
    return "skipped" if result is None else result.status.value


async def deliver(ctx: dict[str, Any], interaction_id: int) -> str:
    """One delivery attempt (bot.pipeline.AnswerPipeline.deliver); a retryable failure defers the job itself
    (arq ``Retry``: kept in Redis across restarts) until the delivery deadline."""
    pipeline: AnswerPipeline = ctx["pipeline"]
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(interaction_id=interaction_id, job_try=ctx.get("job_try", 1))
    try:
        outcome = await pipeline.deliver(interaction_id)
    except Exception as exc:  # noqa: BLE001 - e.g. the database was busy: try again (the deadline still holds)
        log.warning("worker.deliver_retry", error=repr(exc)[:300])
        raise Retry(defer=pipeline.settings.delivery_backoff_s) from exc
    if outcome.retry_in_s is not None:
        raise Retry(defer=outcome.retry_in_s)
    return outcome.state.value if outcome.state is not None else "skipped"


async def sweep(ctx: dict[str, Any]) -> int:
    rt: Runtime = ctx["runtime"]
    min_age_s = rt.settings.sweeper_min_age_s
    return (await sweep_pending(rt.interactions, rt.redis, min_age_s=min_age_s)
            + await sweep_undelivered(rt.interactions, rt.redis, min_age_s=min_age_s))


async def sources_tick(ctx: dict[str, Any]) -> int:
    """Start the syncs of the knowledge sources that are due (each in its own thread; returns at once)."""
    scheduler: SourceScheduler = ctx["source_scheduler"]
    return len(await scheduler.tick())


async def learned_refresh(ctx: dict[str, Any], kb: str) -> str:
    """A review decision changed ``kb``'s learned answers: a new index version with only those documents
    re-read (knowledge/learned_index.py)."""
    rt: Runtime = ctx["runtime"]
    assert rt.store is not None
    try:
        protected = await asyncio.to_thread(pinned_index_versions, rt.settings, kb)
    except Exception:  # noqa: BLE001 - no release yet: nothing is pinned
        protected = set()
    outcome = await asyncio.to_thread(refresh_learned, rt.store, kb, protected_versions=protected)
    await rt.learned.indexed(outcome)
    return f"version {outcome['version']}" if outcome["created_version"] else "unchanged"


async def learned_expire(ctx: dict[str, Any]) -> int:
    """Approved learned answers past their review date leave the index (and wait for a new review); then every
    knowledge base with learned answers is refreshed — a no-op unless a decision's own refresh was lost (Redis
    away when it was enqueued)."""
    rt: Runtime = ctx["runtime"]
    expired = await rt.learned.expire_due()
    slack = rt.deliverers.get(Platform.SLACK)
    if expired and isinstance(slack, SlackDeliverer):  # the Slack review prompts ask for a new review
        await show_due_for_review(slack.client, expired, rt.learned.team)
    folder = rt.settings.learned_dir()
    for kb in sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        await learned_refresh(ctx, kb)
    return len(expired)


def worker_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for :class:`arq.worker.Worker` (what :class:`bot.resilient_worker.ResilientWorker` is built with)."""
    interval = max(1, int(settings.sweeper_interval_s))
    return dict(
        functions=[func(answer, name=ANSWER_JOB, timeout=settings.job_timeout_s, max_tries=settings.job_max_tries),
                   # retried until the delivery deadline, not a number of tries
                   func(deliver, name=DELIVER_JOB, timeout=settings.job_timeout_s,
                        max_tries=delivery_max_tries(settings)),
                   # a shadow canary's background answer: never shown, never retried (it costs money)
                   func(shadow_job, name=SHADOW_JOB, timeout=settings.job_timeout_s, max_tries=1),
                   func(learned_refresh, name=REFRESH_JOB, timeout=max(settings.job_timeout_s, 600.0), max_tries=3),
                   # a share of a sync's embedding (bot/embed_jobs.py): never retried, the syncing process redoes
                   # what a lost helper took; no result kept (the vectors travel through their own keys)
                   func(embed_help, name=EMBED_JOB, timeout=HELPER_BUDGET_S + 300, max_tries=1, keep_result=0)],
        # arq holds every job's in-progress key for (the longest function timeout + 10 s), and that is how long a
        # dead worker's job waits before another worker takes it: the sweep must not raise that bound
        cron_jobs=[
            cron(sweep, second=set(range(0, 60, interval)), run_at_startup=True, unique=True,
                 timeout=min(60.0, settings.job_timeout_s)),
            # alerts and the budget switch's daily reset must not depend on answers succeeding
            cron(guard_cron, second={0, 30}, unique=True, timeout=min(60.0, settings.job_timeout_s)),
            # a canary's rollback / promotion / timeout, even when nothing is answered (docs/playbooks.md)
            cron(canary_cron, second=set(range(0, 60, 5)), unique=True, timeout=min(60.0, settings.job_timeout_s)),
            # every minute: the sources whose schedule is due (docs/sources.md)
            # every minute: learned answers whose review date passed (docs/learned-answers.md)
            *([cron(learned_expire, second={40}, unique=True, timeout=min(60.0, settings.job_timeout_s))]
              if settings.learned_answers else []),
            *([cron(sources_tick, second={20}, unique=True, timeout=min(60.0, settings.job_timeout_s))]
              if settings.sources_scheduler else []),
        ],
        on_startup=startup,
        on_shutdown=shutdown,
        redis_settings=redis_settings(settings),
        max_jobs=settings.worker_max_jobs,
        job_timeout=settings.job_timeout_s,
        max_tries=settings.job_max_tries,
        poll_delay=settings.worker_poll_delay_s,
        keep_result=3600,
        ctx={"settings": settings},
    )


def build_worker(settings: Settings, **overrides: Any) -> Worker:
    """The worker ``deskmate worker`` runs: arq's, riding out Redis outages and leasing its running jobs
    (:class:`bot.resilient_worker.ResilientWorker`)."""
    options = worker_options(settings)
    options.update(overrides)
    return ResilientWorker(**options, lease_s=settings.worker_lease_s, lease_renew_s=settings.worker_lease_renew_s,
                           redis_retry_max_s=settings.worker_redis_retry_max_s,
                           prepare_pool=partial(bound_reads, settings=settings))


def run_worker(settings: Settings) -> None:
    configure_logging(settings)
    build_worker(settings, ctx={"settings": settings, "freeze_heap": True}).run()
