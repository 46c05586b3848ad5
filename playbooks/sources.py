"""Running knowledge-source syncs: one sync, recorded (``deskmate source sync``), and the schedule (the worker).

:class:`SourceScheduler` is ticked every minute by the worker (``bot/worker.py``). Each source whose schedule is
due — from its last recorded run — is synced in a thread of its own, so a slow or failing source never holds
the others back; a Redis lock per source (``deskmate:source-sync:<name>``) keeps two workers, or two ticks, from
syncing the same source at once (it expires after ``LOCK_TTL_S`` should a worker die mid-sync). A sync held by
the change guard raises an alert naming the runbook.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import Any

from bot.core.log import get_logger
from bot.core.settings import Settings
from feedback.db import get_database
from feedback.models import SyncRun
from feedback.sync_runs import last_runs, record_run
from knowledge.config import KnowledgeConfig
from knowledge.connectors.config import SourceConfig, SourcesConfigError, load_sources
from knowledge.connectors.sync import ChangeGuard, SyncResult, kb_of, sync_source
from knowledge.index import IndexStore
from knowledge.shared_embedding import EmbeddingWork, embed_here
from playbooks.alerts import Alerter
from playbooks.releases import pinned_index_versions

log = get_logger(__name__)

LOCK_TTL_S = 4 * 3600
LOCK_PREFIX = "deskmate:source-sync:"

#: Opens the way a sync embeds its chunks, for the time of one sync (in the sync's thread): the workers' shared
#: embedding (``bot.embed_jobs.shared_embedding``), or this process alone (the default).
EmbeddingFactory = Callable[[], AbstractContextManager[EmbeddingWork]]


def embed_alone() -> AbstractContextManager[EmbeddingWork]:
    return contextlib.nullcontext(embed_here)


def run_sync(settings: Settings, source: SourceConfig, sources: list[SourceConfig], *,
             trigger: str = "cli", force: bool = False, embedding: EmbeddingFactory = embed_alone) -> SyncResult:
    """Sync one source (synchronous: embedding is CPU work) and record the run. The change guard
    (``DESKMATE_SOURCES_MAX_CHANGE_SHARE``) holds a mass deletion or change unless ``force``."""
    kb = kb_of(source, settings.kb_name)
    try:
        protected = pinned_index_versions(settings, kb)
    except Exception:  # noqa: BLE001 - no database yet: nothing is pinned
        protected = set()
    with embedding() as embed:
        result = sync_source(IndexStore(KnowledgeConfig.from_settings(settings)), source, sources,
                             work_root=settings.sources_work_dir(), default_kb=settings.kb_name,
                             protected_versions=protected, embedding=embed,
                             guard=None if force else ChangeGuard(max_share=settings.sources_max_change_share))
    db = get_database(settings.database_url_resolved())
    with db.session() as session:
        record_run(session, result, trigger=trigger)
    return result


def due_sources(sources: list[SourceConfig], last: dict[str, SyncRun], now: datetime) -> list[SourceConfig]:
    """The scheduled sources whose next run, counted from their last run's start, is not after ``now``; a
    scheduled source that never ran is due at once."""
    due = []
    for source in sources:
        schedule = source.parsed_schedule
        if schedule.manual:
            continue
        run = last.get(source.name)
        if run is None:
            due.append(source)
            continue
        started = run.started_at if run.started_at.tzinfo else run.started_at.replace(tzinfo=timezone.utc)
        next_at = schedule.next_after(started)
        if next_at is not None and next_at <= now:
            due.append(source)
    return due


class SourceScheduler:
    """Starts the due sources' syncs; each runs in its own thread and task, recorded with trigger "schedule"."""

    def __init__(self, settings: Settings, redis: Any, alerter: Alerter | None = None,
                 embedding: EmbeddingFactory = embed_alone) -> None:
        self.settings = settings
        self.redis = redis  # redis.asyncio.Redis (arq's ArqRedis)
        self.alerter = alerter  # a held sync is alerted to the operators
        self.embedding = embedding  # the worker's: embedding shared with every worker
        self.running: dict[str, asyncio.Task[SyncResult | None]] = {}

    async def tick(self, now: datetime | None = None) -> list[str]:
        """Start every due source that is not already syncing here or elsewhere; returns their names."""
        now = now or datetime.now(timezone.utc)
        try:
            sources = load_sources(self.settings.sources_file)
        except SourcesConfigError as exc:
            log.warning("sources.schedule.bad_file", error=str(exc))
            return []
        if not sources:
            return []
        last = await asyncio.to_thread(self._last_runs)
        started = []
        for source in due_sources(sources, last, now):
            if source.name in self.running:
                continue
            if not await self.redis.set(LOCK_PREFIX + source.name, "1", nx=True, ex=LOCK_TTL_S):
                continue  # another worker is syncing it
            task = asyncio.create_task(self._run(source, sources), name=f"source-sync:{source.name}")
            self.running[source.name] = task
            task.add_done_callback(self._forget(source.name))
            started.append(source.name)
        if started:
            log.info("sources.schedule.started", sources=started)
        return started

    def _forget(self, name: str) -> Any:
        def done(_task: asyncio.Task[SyncResult | None]) -> None:
            self.running.pop(name, None)

        return done

    def _last_runs(self) -> dict[str, SyncRun]:
        with get_database(self.settings.database_url_resolved()).session() as session:
            return last_runs(session)

    async def _run(self, source: SourceConfig, sources: list[SourceConfig]) -> SyncResult | None:
        try:
            result = await asyncio.to_thread(run_sync, self.settings, source, sources, trigger="schedule",
                                           embedding=self.embedding)
            if result.status == "held" and self.alerter is not None:
                await self.alerter.raise_alert(f"source-held:{source.name}", f"Knowledge source sync {result.errors[0]}")
            return result
        except Exception:  # noqa: BLE001 - e.g. the database was down: logged, retried at the next due time
            log.exception("sources.schedule.failed", source=source.name)
            return None
        finally:
            await self.redis.delete(LOCK_PREFIX + source.name)

    async def wait(self) -> None:
        """Until the syncs started so far have finished (tests, shutdown)."""
        if self.running:
            await asyncio.gather(*self.running.values(), return_exceptions=True)
