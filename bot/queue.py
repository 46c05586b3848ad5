"""The answer queue (arq on Redis): enqueueing an interaction's answer job, and the sweeper that re-enqueues.

A question is recorded in the database before it is enqueued (see :mod:`bot.intake`), so a dead Redis never
loses one: :func:`sweep_pending` re-enqueues pending questions whose job is gone once Redis is back. The
platform's idempotency key is the arq job id, so a redelivered event is answered once.
"""

from __future__ import annotations

from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus
from redis.exceptions import RedisError

from bot.core.log import get_logger
from feedback.interactions import InteractionStore

log = get_logger(__name__)

ANSWER_JOB = "answer"


def job_id(idempotency_key: str) -> str:
    return f"deskmate:q:{idempotency_key}"


async def enqueue(redis: ArqRedis, interaction_id: int, idempotency_key: str) -> bool:
    """Enqueue the answer job; False when Redis is unreachable (the sweeper will enqueue it later)."""
    try:
        await redis.enqueue_job(ANSWER_JOB, interaction_id, _job_id=job_id(idempotency_key))
        return True
    except (RedisError, OSError) as exc:
        log.error("queue.enqueue_failed", interaction_id=interaction_id, error=str(exc))
        return False


async def sweep_pending(interactions: InteractionStore, redis: ArqRedis, *, min_age_s: float,
                        limit: int = 500) -> int:
    """Re-enqueue pending questions older than ``min_age_s`` that have no queued or running job."""
    requeued = 0
    for interaction_id, key in await interactions.stale_pending(min_age_s=min_age_s, limit=limit):
        job = Job(job_id(key), redis)
        status = await job.status()
        if status in (JobStatus.queued, JobStatus.deferred, JobStatus.in_progress):
            continue
        if status == JobStatus.complete:
            # the job ran but the row is still pending (e.g. the worker died between steps): run it again
            await redis.delete(f"arq:result:{job_id(key)}")
        if await enqueue(redis, interaction_id, key):
            requeued += 1
            log.info("queue.requeued", interaction_id=interaction_id, previous_status=status.value)
    return requeued
