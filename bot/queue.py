"""Submitting questions: recorded in the database first, then enqueued to the arq worker.

Writing the pending :class:`~feedback.models.Interaction` before enqueueing means a dead Redis never loses a
question: :func:`sweep_pending` re-enqueues pending questions whose job is gone once Redis is back. The
platform's idempotency key is unique in the table and is the arq job id, so a redelivered event is answered
once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus
from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from bot.core.clock import utcnow
from bot.core.log import get_logger
from bot.core.types import Question, Status
from bot.pipeline import hash_user
from feedback.db import Database
from feedback.models import Interaction

log = get_logger(__name__)

ANSWER_JOB = "answer"


def job_id(idempotency_key: str) -> str:
    return f"deskmate:q:{idempotency_key}"


@dataclass
class Submitted:
    interaction_id: int
    duplicate: bool  # this idempotency key was seen before: nothing new was enqueued
    enqueued: bool  # False when Redis was unreachable: the sweeper will enqueue it later


async def record_question(db: Database, question: Question) -> tuple[int, bool]:
    """Insert the pending interaction; returns (id, duplicate)."""
    async with db.asession() as session:
        row = Interaction(
            idempotency_key=question.idempotency_key, platform=question.platform.value,
            workspace=question.workspace, channel=question.channel, thread=question.thread,
            user_hash=hash_user(question.user), question=question.text,
            question_payload=question.model_dump(mode="json"),
        )
        session.add(row)
        try:
            await session.commit()
            assert row.id is not None
            return row.id, False
        except IntegrityError:
            await session.rollback()
    async with db.asession() as session:
        stmt = select(Interaction.id).where(Interaction.idempotency_key == question.idempotency_key)
        existing = (await session.exec(stmt)).first()
        assert existing is not None
        return existing, True


async def enqueue(redis: ArqRedis, interaction_id: int, idempotency_key: str) -> bool:
    try:
        await redis.enqueue_job(ANSWER_JOB, interaction_id, _job_id=job_id(idempotency_key))
        return True
    except (RedisError, OSError) as exc:
        log.error("queue.enqueue_failed", interaction_id=interaction_id, error=str(exc))
        return False


async def submit(db: Database, redis: ArqRedis, question: Question) -> Submitted:
    interaction_id, duplicate = await record_question(db, question)
    if duplicate:
        log.info("queue.duplicate", interaction_id=interaction_id)
        return Submitted(interaction_id, duplicate=True, enqueued=False)
    return Submitted(interaction_id, duplicate=False,
                     enqueued=await enqueue(redis, interaction_id, question.idempotency_key))


async def sweep_pending(db: Database, redis: ArqRedis, *, min_age_s: float, limit: int = 500) -> int:
    """Re-enqueue pending questions older than ``min_age_s`` that have no queued or running job."""
    cutoff = utcnow() - timedelta(seconds=min_age_s)
    async with db.asession() as session:
        stmt = (select(Interaction.id, Interaction.idempotency_key)
                .where(Interaction.status == Status.PENDING, col(Interaction.created_at) < cutoff)
                .order_by(col(Interaction.id)).limit(limit))
        rows = list((await session.exec(stmt)).all())
    requeued = 0
    for interaction_id, key in rows:
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
