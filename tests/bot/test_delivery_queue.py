"""The delivery job's queue and its sweeper, on the session's real redis-server and a SQLite database.

The sweeper re-enqueues the delivery of a final answer that is still undelivered when its job is gone (Redis
restarted empty, the worker died before handing it over); it never adds a second job for a delivery that is
queued, deferred (a retry waiting) or running, nor while the answer job (which makes the first attempt) runs.
Neither sweep runs again an answer or a delivery that its job finished between the sweep's list and its look at
the job.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, result_key_prefix
from arq.jobs import Job, JobStatus

from bot.core.clock import utcnow
from bot.core.types import Answer, Platform, Question
from bot.queue import (DELIVER_JOB, delivery_job_id, delivery_max_tries, enqueue_delivery, job_id,
                       sweep_pending, sweep_undelivered)
from feedback.db import Database
from feedback.interactions import InteractionStore
from feedback.models import Interaction
from tests.conftest import settings_for


async def answered(store: InteractionStore, *, age_s: float = 60.0, deliver: bool = True) -> tuple[int, str]:
    """A final answer recorded ``age_s`` ago whose delivery is pending (or, ``deliver=False``, done)."""
    key = f"slack:Ev{uuid.uuid4().hex[:10]}"
    interaction_id, _ = await store.record_pending(
        Question(idempotency_key=key, platform=Platform.SLACK, channel="C1", user="U1", text="How do I book travel?"))
    await store.finalize(interaction_id, Answer(text="Through the portal."), [], index_version=None, deliver=deliver)
    async with store.db.asession() as session:
        row = await session.get(Interaction, interaction_id)
        assert row is not None
        row.answered_at = utcnow() - timedelta(seconds=age_s)
        session.add(row)
        await session.commit()
    return interaction_id, key


async def queued(redis: ArqRedis) -> list[str]:
    return [j.decode() for j in await redis.zrange("arq:queue", 0, -1)]


def store_for(database: Database) -> InteractionStore:
    return InteractionStore(database, user_salt="test-salt")


async def test_one_delivery_job_per_question(arq_redis: ArqRedis) -> None:
    assert delivery_job_id("slack:Ev1") == "deskmate:d:slack:Ev1" != job_id("slack:Ev1")
    assert await enqueue_delivery(arq_redis, 7, "slack:Ev1", defer_s=30)
    assert await enqueue_delivery(arq_redis, 7, "slack:Ev1"), "a second hand-over is not an error"
    assert await queued(arq_redis) == ["deskmate:d:slack:Ev1"], "and it is still one job"
    info = await Job("deskmate:d:slack:Ev1", arq_redis).info()
    assert info is not None and info.function == DELIVER_JOB and info.args == (7,)
    assert await Job("deskmate:d:slack:Ev1", arq_redis).status() is JobStatus.deferred


def test_arq_never_stops_the_delivery_job_before_the_deadline(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, delivery_deadline_s=900, delivery_backoff_s=2)
    assert delivery_max_tries(settings) >= 900 / 2, "each retry waits at least delivery_backoff_s"


async def test_sweep_enqueues_an_undelivered_answer_whose_job_is_gone(database: Database,
                                                                     arq_redis: ArqRedis) -> None:
    store = store_for(database)
    interaction_id, key = await answered(store)
    await answered(store, deliver=False)  # delivered: nothing to do
    assert await sweep_undelivered(store, arq_redis, min_age_s=10) == 1
    assert await queued(arq_redis) == [delivery_job_id(key)]
    info = await Job(delivery_job_id(key), arq_redis).info()
    assert info is not None and info.function == DELIVER_JOB and info.args == (interaction_id,)
    assert await sweep_undelivered(store, arq_redis, min_age_s=10) == 0, "queued now: not enqueued twice"


async def test_sweep_leaves_waiting_and_running_deliveries_and_running_answers_alone(
        database: Database, arq_redis: ArqRedis) -> None:
    store = store_for(database)
    deferred_id, deferred_key = await answered(store)
    await enqueue_delivery(arq_redis, deferred_id, deferred_key, defer_s=120)  # a retry waiting out Retry-After
    _, running_key = await answered(store)
    await arq_redis.set(in_progress_key_prefix + delivery_job_id(running_key), b"1", px=60_000)
    _, answering_key = await answered(store)
    await arq_redis.set(in_progress_key_prefix + job_id(answering_key), b"1", px=60_000)  # first attempt under way
    young_id, young_key = await answered(store, age_s=1)

    assert await sweep_undelivered(store, arq_redis, min_age_s=10) == 0
    assert await queued(arq_redis) == [delivery_job_id(deferred_key)]
    assert await sweep_undelivered(store, arq_redis, min_age_s=0) == 1, "only the young one, once old enough"
    assert delivery_job_id(young_key) in await queued(arq_redis)


async def test_sweep_reruns_a_delivery_job_that_ended_while_the_delivery_stayed_pending(
        database: Database, arq_redis: ArqRedis) -> None:
    store = store_for(database)
    interaction_id, key = await answered(store)
    await arq_redis.set(result_key_prefix + delivery_job_id(key), b"x", px=60_000)
    assert await Job(delivery_job_id(key), arq_redis).status() is JobStatus.complete
    assert await sweep_undelivered(store, arq_redis, min_age_s=10) == 1
    assert await Job(delivery_job_id(key), arq_redis).status() is JobStatus.queued


async def test_sweep_leaves_an_answer_whose_job_finished_after_the_list_was_read(
        database: Database, arq_redis: ArqRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep lists pending questions, then looks at each one's job. A job that finishes in between has
    finalized its row and ends "complete": the sweep must not take that for a job that died between steps and
    run the answer a second time (seen as duplicate answer jobs in a 600-question burst)."""
    store = store_for(database)
    key = f"slack:Ev{uuid.uuid4().hex[:10]}"
    interaction_id, _ = await store.record_pending(
        Question(idempotency_key=key, platform=Platform.SLACK, channel="C1", user="U1", text="How do I book travel?"))
    listed = store.stale_pending

    async def job_finishes_meanwhile(**kwargs: float | int) -> list[tuple[int, str]]:
        found = await listed(**kwargs)  # type: ignore[arg-type]
        await store.finalize(interaction_id, Answer(text="Through the portal."), [], index_version=None)
        await arq_redis.set(result_key_prefix + job_id(key), b"x", px=60_000)
        return found

    monkeypatch.setattr(store, "stale_pending", job_finishes_meanwhile)
    assert await sweep_pending(store, arq_redis, min_age_s=0) == 0
    assert await queued(arq_redis) == [], "the finished answer is not queued again"
    assert await Job(job_id(key), arq_redis).status() is JobStatus.complete, "its result is kept"


async def test_sweep_leaves_a_delivery_that_succeeded_after_the_list_was_read(
        database: Database, arq_redis: ArqRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    store = store_for(database)
    interaction_id, key = await answered(store)
    listed = store.undelivered

    async def delivered_meanwhile(**kwargs: float | int) -> list[tuple[int, str]]:
        found = await listed(**kwargs)  # type: ignore[arg-type]
        await store.mark_delivered(interaction_id, {"ts": "1.0"})
        await arq_redis.set(result_key_prefix + delivery_job_id(key), b"x", px=60_000)
        return found

    monkeypatch.setattr(store, "undelivered", delivered_meanwhile)
    assert await sweep_undelivered(store, arq_redis, min_age_s=10) == 0
    assert await queued(arq_redis) == [], "the delivered answer is not sent twice"
