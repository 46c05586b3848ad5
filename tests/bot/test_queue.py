"""The answer queue and its sweeper, on the session's real redis-server and a SQLite database.

The sweeper is what answers a question whose job vanished (Redis down at intake, Redis restarted empty, a worker
that died between steps); it must never enqueue a second job for a question that is queued or being answered.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from arq.connections import ArqRedis, RedisSettings
from arq.constants import in_progress_key_prefix
from arq.jobs import Job, JobStatus
from arq.worker import Worker, func

from bot.core.clock import utcnow
from bot.core.types import Platform, Question
from bot.queue import ANSWER_JOB, enqueue, job_id, sweep_pending
from feedback.db import Database
from feedback.interactions import InteractionStore
from feedback.models import Interaction


async def pending(store: InteractionStore, *, age_s: float = 60.0, status: str = "pending") -> tuple[int, str]:
    """A recorded question, created ``age_s`` ago, with no job."""
    key = f"slack:Ev{uuid.uuid4().hex[:10]}"
    interaction_id, _ = await store.record_pending(
        Question(idempotency_key=key, platform=Platform.SLACK, channel="C1", user="U1", text="How do I book travel?"))
    async with store.db.asession() as session:
        row = await session.get(Interaction, interaction_id)
        assert row is not None
        row.created_at = utcnow() - timedelta(seconds=age_s)
        row.status = status
        session.add(row)
        await session.commit()
    return interaction_id, key


async def queued(redis: ArqRedis) -> list[str]:
    return [j.decode() for j in await redis.zrange("arq:queue", 0, -1)]


def store_for(database: Database) -> InteractionStore:
    return InteractionStore(database, user_salt="test-salt")


async def run_jobs_to_completion(redis_url: str, handler: Any) -> Worker:
    """A real arq worker in burst mode: runs every queued job, then returns (no sleeping, no polling by us)."""
    worker = Worker(functions=[func(handler, name=ANSWER_JOB)], redis_settings=RedisSettings.from_dsn(redis_url),
                    burst=True, poll_delay=0.01, handle_signals=False, keep_result=3600)
    try:
        await worker.main()
    finally:
        await worker.close()
    return worker


async def test_the_job_id_is_the_idempotency_key(arq_redis: ArqRedis) -> None:
    assert job_id("slack:Ev123") == "deskmate:q:slack:Ev123"
    assert await enqueue(arq_redis, 7, "slack:Ev123")
    assert await enqueue(arq_redis, 7, "slack:Ev123"), "a second enqueue of the same key is not an error"
    assert await queued(arq_redis) == ["deskmate:q:slack:Ev123"], "and it is one job"
    info = await Job("deskmate:q:slack:Ev123", arq_redis).info()
    assert info is not None and info.function == ANSWER_JOB and info.args == (7,)


async def test_a_finished_job_is_not_run_again_for_the_same_key(arq_redis: ArqRedis, redis_url: str) -> None:
    ran: list[int] = []

    async def answer(ctx: dict[str, Any], interaction_id: int) -> str:
        ran.append(interaction_id)
        return "answered"

    await enqueue(arq_redis, 1, "slack:EvOnce")
    worker = await run_jobs_to_completion(redis_url, answer)
    assert worker.jobs_complete == 1 and ran == [1]
    await enqueue(arq_redis, 1, "slack:EvOnce")  # the platform redelivered the event after the answer
    assert await queued(arq_redis) == [], "arq keeps the result under the job id: no second job"
    assert await Job(job_id("slack:EvOnce"), arq_redis).result(timeout=1) == "answered"


async def test_sweep_enqueues_a_pending_question_whose_job_is_gone(database: Database, arq_redis: ArqRedis) -> None:
    store = store_for(database)
    interaction_id, key = await pending(store)
    assert await sweep_pending(store, arq_redis, min_age_s=10) == 1
    assert await queued(arq_redis) == [job_id(key)]
    info = await Job(job_id(key), arq_redis).info()
    assert info is not None and info.args == (interaction_id,)


async def test_sweep_leaves_queued_and_running_jobs_alone(database: Database, arq_redis: ArqRedis) -> None:
    store = store_for(database)
    queued_id, queued_key = await pending(store)
    running_id, running_key = await pending(store)
    await enqueue(arq_redis, queued_id, queued_key)
    await enqueue(arq_redis, running_id, running_key)
    # what a worker holds while it answers: arq's in-progress key for the job
    await arq_redis.set(in_progress_key_prefix + job_id(running_key), b"1", px=60_000)
    assert await Job(job_id(running_key), arq_redis).status() is JobStatus.in_progress
    before = await arq_redis.zrange("arq:queue", 0, -1, withscores=True)

    assert await sweep_pending(store, arq_redis, min_age_s=10) == 0
    assert await arq_redis.zrange("arq:queue", 0, -1, withscores=True) == before, "nothing re-enqueued or moved"


async def test_sweep_reruns_a_job_that_completed_while_its_question_stayed_pending(
        database: Database, arq_redis: ArqRedis, redis_url: str) -> None:
    """The worker ran the job but died before the answer was recorded: the question must not stay pending."""
    store = store_for(database)
    interaction_id, key = await pending(store)
    runs: list[int] = []

    async def died_before_recording(ctx: dict[str, Any], iid: int) -> str:
        runs.append(iid)
        return "skipped"

    await enqueue(arq_redis, interaction_id, key)
    await run_jobs_to_completion(redis_url, died_before_recording)
    assert await Job(job_id(key), arq_redis).status() is JobStatus.complete

    assert await sweep_pending(store, arq_redis, min_age_s=10) == 1
    assert await Job(job_id(key), arq_redis).status() is JobStatus.queued
    await run_jobs_to_completion(redis_url, died_before_recording)
    assert runs == [interaction_id, interaction_id], "the question was picked up again"


async def test_sweep_respects_min_age_and_skips_answered_questions(database: Database, arq_redis: ArqRedis) -> None:
    store = store_for(database)
    _, young_key = await pending(store, age_s=1)  # intake may be about to enqueue it
    await pending(store, age_s=600, status="answered")
    await pending(store, age_s=600, status="error")
    assert await sweep_pending(store, arq_redis, min_age_s=30) == 0
    assert await queued(arq_redis) == []
    assert await sweep_pending(store, arq_redis, min_age_s=0.5) == 1
    assert await queued(arq_redis) == [job_id(young_key)]


async def test_sweep_takes_the_oldest_first_up_to_the_limit(database: Database, arq_redis: ArqRedis) -> None:
    store = store_for(database)
    _, older_key = await pending(store, age_s=600)
    _, newer_key = await pending(store, age_s=60)
    assert await sweep_pending(store, arq_redis, min_age_s=10, limit=1) == 1
    assert await queued(arq_redis) == [job_id(older_key)]
    assert await sweep_pending(store, arq_redis, min_age_s=10, limit=5) == 1, "only the one still without a job"
    assert sorted(await queued(arq_redis)) == sorted([job_id(older_key), job_id(newer_key)])
