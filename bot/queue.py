"""The answer queue (arq on Redis): enqueueing an interaction's answer job and its delivery job, and the sweeper
that re-enqueues.

A question is recorded in the database before it is enqueued (see :mod:`bot.intake`), so a dead Redis never
loses one: :func:`sweep_pending` re-enqueues pending questions whose job is gone once Redis is back. The
platform's idempotency key is the arq job id, so a redelivered event is answered once.

Delivery is its own job (``deliver``, job id ``deskmate:d:<key>``: one per question): the answer job makes the
first attempt itself and hands a failed one over to it (:func:`enqueue_delivery`); the job retries with backoff
(arq's ``Retry``, the job kept in Redis across worker restarts) until the delivery deadline. A final answer whose
delivery is still pending and has no job (Redis lost it, the worker died before handing over) is re-enqueued by
:func:`sweep_undelivered`.
"""

from __future__ import annotations

import math

from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus
from redis.exceptions import RedisError

from bot.core.log import get_logger
from bot.core.settings import Settings
from bot.core.types import Status
from feedback.interactions import DeliveryState, InteractionStore

log = get_logger(__name__)

ANSWER_JOB = "answer"
DELIVER_JOB = "deliver"
_ALIVE = (JobStatus.queued, JobStatus.deferred, JobStatus.in_progress)


def job_id(idempotency_key: str) -> str:
    return f"deskmate:q:{idempotency_key}"


def delivery_job_id(idempotency_key: str) -> str:
    return f"deskmate:d:{idempotency_key}"


def delivery_max_tries(settings: Settings) -> int:
    """arq's ``max_tries`` for the deliver job: never the limit — the delivery deadline is. Each retry waits at
    least ``delivery_backoff_s``, so this many tries outlast the deadline (plus restarts' re-runs)."""
    return math.ceil(settings.delivery_deadline_s / max(settings.delivery_backoff_s, 0.01)) + 25


async def enqueue(redis: ArqRedis, interaction_id: int, idempotency_key: str) -> bool:
    """Enqueue the answer job; False when Redis is unreachable (the sweeper will enqueue it later)."""
    try:
        await redis.enqueue_job(ANSWER_JOB, interaction_id, _job_id=job_id(idempotency_key))
        return True
    except (RedisError, OSError) as exc:
        log.error("queue.enqueue_failed", interaction_id=interaction_id, error=str(exc))
        return False


async def enqueue_delivery(redis: ArqRedis, interaction_id: int, idempotency_key: str, *,
                           defer_s: float = 0.0) -> bool:
    """Enqueue the delivery job (once per question: a job already queued, deferred or running is left as it is);
    False when Redis is unreachable (the sweeper will enqueue it later)."""
    try:
        await redis.enqueue_job(DELIVER_JOB, interaction_id, _job_id=delivery_job_id(idempotency_key),
                                _defer_by=max(0.0, defer_s) or None)
        return True
    except (RedisError, OSError) as exc:
        log.error("queue.enqueue_delivery_failed", interaction_id=interaction_id, error=str(exc))
        return False


class DeliveryQueue:
    """Where the answer pipeline hands a failed first delivery attempt over to the retried ``deliver`` job."""

    def __init__(self, redis: ArqRedis) -> None:
        self.redis = redis

    async def schedule(self, interaction_id: int, idempotency_key: str, defer_s: float) -> bool:
        return await enqueue_delivery(self.redis, interaction_id, idempotency_key, defer_s=defer_s)


async def sweep_pending(interactions: InteractionStore, redis: ArqRedis, *, min_age_s: float,
                        limit: int = 500) -> int:
    """Re-enqueue pending questions older than ``min_age_s`` that have no queued or running job."""
    requeued = 0
    for interaction_id, key in await interactions.stale_pending(min_age_s=min_age_s, limit=limit):
        job = Job(job_id(key), redis)
        status = await job.status()
        if status in _ALIVE:
            continue
        if not await _still(interactions, interaction_id, pending_answer=True):
            continue  # its job finished it after the list was read (and then ended: "complete")
        if status == JobStatus.complete:
            # the job ran but the row is still pending (e.g. the worker died between steps): run it again
            await redis.delete(f"arq:result:{job_id(key)}")
        if await enqueue(redis, interaction_id, key):
            requeued += 1
            log.info("queue.requeued", interaction_id=interaction_id, previous_status=status.value)
    return requeued


async def _still(interactions: InteractionStore, interaction_id: int, *, pending_answer: bool) -> bool:
    """Whether the question is still waiting for its answer (``pending_answer``) or its delivery, read again
    *after* its job was found gone: the list was read before, and a job that finishes in between ends "complete"
    with its row already final — without this second look the sweep would run a finished answer again."""
    row = await interactions.get(interaction_id)
    if row is None:
        return False
    if pending_answer:
        return row.status == Status.PENDING.value
    return row.delivery_state == DeliveryState.PENDING.value


async def sweep_undelivered(interactions: InteractionStore, redis: ArqRedis, *, min_age_s: float,
                            limit: int = 500) -> int:
    """Re-enqueue the delivery of final answers still undelivered ``min_age_s`` after they were answered, when
    neither their delivery job nor their answer job (which makes the first attempt) is queued or running."""
    requeued = 0
    for interaction_id, key in await interactions.undelivered(older_than_s=min_age_s, limit=limit):
        status = await Job(delivery_job_id(key), redis).status()
        if status in _ALIVE:
            continue
        if await Job(job_id(key), redis).status() == JobStatus.in_progress:
            continue  # its first delivery attempt may be under way
        if not await _still(interactions, interaction_id, pending_answer=False):
            continue  # delivered after the list was read
        if status == JobStatus.complete:
            # the job ended but the delivery is still pending (e.g. it was stopped between steps): run it again
            await redis.delete(f"arq:result:{delivery_job_id(key)}")
        if await enqueue_delivery(redis, interaction_id, key):
            requeued += 1
            log.info("queue.delivery_requeued", interaction_id=interaction_id, previous_status=status.value)
    return requeued
