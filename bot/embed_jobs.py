"""A sync's embedding work on the queue: every worker helps (knowledge/shared_embedding.py has the exchange).

:func:`shared_embedding` is what ``deskmate source sync`` and the worker's source schedule embed with: it shares
the sync's batches through Redis and keeps one helper job (``embed_help``, :data:`EMBED_JOB`) waiting on the arq
queue while there are batches left, so any worker that polls the queue joins in; one that already helps takes
the job and declines at once, and the next job waits for another. The worker runs :func:`embed_help`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus
from prometheus_client import Counter

from bot.core.settings import Settings
from bot.redis_conn import connect, sync_client
from knowledge.config import KnowledgeConfig
from knowledge.index import IndexStore
from knowledge.shared_embedding import EmbeddingWork, SharedEmbedding, embed_here, embedder_for_store, help_embed

EMBED_JOB = "embed_help"
#: A helper job no worker took within this long is dropped (the coordinator has done the work itself by then).
HELPER_EXPIRES = timedelta(minutes=10)
#: A helper stops taking batches after this long, so that a job never outlives its lease or timeout by much and
#: the work is spread again (the coordinator has already put the next helper job on the queue).
HELPER_BUDGET_S = 120.0

EMBED_BATCHES = Counter("deskmate_worker_embedding_batches",
                        "Batches of a knowledge sync's embedding this worker embedded for the syncing process.")


class _Invitations:
    """``invite(run)`` for :class:`SharedEmbedding`: one helper job waiting on the queue at a time. Runs in the
    syncing thread, on an event loop of its own (the coordinator is synchronous)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._runner: asyncio.Runner | None = None
        self._pool: ArqRedis | None = None
        self._waiting: Job | None = None
        self._run: str | None = None

    def __call__(self, run: str) -> None:
        if self._runner is None:
            self._runner = asyncio.Runner()
            self._pool = self._runner.run(connect(self.settings))
        assert self._pool is not None
        if self._waiting is not None and self._run == run:
            if self._runner.run(self._waiting.status()) in (JobStatus.queued, JobStatus.deferred):
                return
        self._run = run
        self._waiting = self._runner.run(self._pool.enqueue_job(EMBED_JOB, run, _expires=HELPER_EXPIRES))

    def close(self) -> None:
        if self._runner is None:
            return
        if self._pool is not None:
            with contextlib.suppress(Exception):
                self._runner.run(self._pool.aclose())
        self._runner.close()


@contextlib.contextmanager
def shared_embedding(settings: Settings, **options: Any) -> Iterator[EmbeddingWork]:
    """How a sync embeds, for the time of one sync: shared with the workers (``DESKMATE_SOURCES_SHARED_EMBEDDING``),
    or alone. Without Redis the work is simply done here (knowledge.shared_embedding says how). ``options``:
    :class:`SharedEmbedding`'s (batch size, …)."""
    if not settings.sources_shared_embedding:
        yield embed_here
        return
    client = sync_client(settings, min_read_timeout_s=5.0)  # the syncing process blocks 1 s at a time on BLPOP
    invitations = _Invitations(settings)
    # embedding on one thread per core (the default) leaves no core of this host to a helper beside it
    all_cores = settings.embedding_threads == 0 or settings.embedding_threads >= (os.cpu_count() or 1)
    options.setdefault("busy_host", socket.gethostname() if all_cores else None)
    try:
        yield SharedEmbedding(client, invitations, **options)
    finally:
        invitations.close()
        client.close()


async def embed_help(ctx: dict[str, Any], run: str) -> int:
    """The worker's helper job: embed a sync's batches with this worker's own embedders (those of its index
    store; a worker whose knowledge base has no index yet loads them for the purpose)."""
    rt = ctx["runtime"]
    store = rt.store or ctx.get("embedding_store")
    if store is None:  # built once per worker (its embedders load on first use)
        store = ctx["embedding_store"] = IndexStore(KnowledgeConfig.from_settings(rt.settings))
    batches = await help_embed(rt.redis, embedder_for_store(store), run, budget_s=HELPER_BUDGET_S)
    EMBED_BATCHES.inc(batches)
    return batches
