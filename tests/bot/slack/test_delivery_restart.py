"""A delivery pending when its worker dies is made by the next worker: real ``deskmate worker`` processes.

Slack fails every ``chat.update`` (HTML 503s) while the first worker answers the question: the answer is
recorded, its delivery is retried and waits (deferred) in Redis. The worker is SIGKILLed — no shutdown, no
cleanup — and Slack recovers. A second worker, started afterwards, replaces the placeholder with the answer,
once: the delivery job waited in Redis for it, or, if Redis lost the job too, its sweeper re-enqueued it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from arq.jobs import Job, JobStatus

from bot.core.settings import Settings
from bot.queue import delivery_job_id
from tests.bot.slack.test_delivery_faults import FAST, asked, assert_delivered_once, metric
from tests.fakes.slack_api import FakeSlack
from tests.stack import worker_processes

#: short backoff, and a short lease: should the kill land mid-attempt, the job moves on within 2 s anyway
RESTART = FAST | {"delivery_backoff_s": 0.3, "delivery_backoff_max_s": 0.6, "worker_lease_s": 2.0,
                  "worker_lease_renew_s": 0.5, "sweeper_interval_s": 1, "sweeper_min_age_s": 0.5}


@pytest.mark.parametrize("redis_keeps_the_job", [True, False],
                         ids=["the delivery job waits in Redis", "Redis lost the job: the sweeper re-enqueues it"])
async def test_a_delivery_pending_when_its_worker_is_killed_is_made_once_by_the_next_worker(
        redis_keeps_the_job: bool, slack_settings: Callable[..., Settings], slack_api: FakeSlack,
        tmp_path: Path) -> None:
    settings = slack_settings(**RESTART)
    async with asked(settings, slack_api) as ask:
        redis = ask.stack.web_runtime.redis
        slack_api.outage(3600)
        (tmp_path / "first").mkdir()
        (tmp_path / "second").mkdir()
        async with worker_processes(settings, 1, tmp_path / "first") as [first]:
            row = await ask.wait_row(lambda r: r.delivery_attempts >= 2, timeout_s=60)
            job = Job(delivery_job_id(row.idempotency_key), redis)
            while await job.status() != JobStatus.deferred:  # between attempts, not in the middle of one
                await asyncio.sleep(0.005)
            first.kill()
        assert first.events("pipeline.delivery_retry"), first.log_tail()
        row = await ask.row()
        attempts_before = row.delivery_attempts
        assert row.status == "answered" and row.delivery_state == "pending", "answered, not yet delivered"
        assert await metric(ask.stack, "deskmate_answers_undelivered") == 1
        assert ask.answers_shown() == []
        if not redis_keeps_the_job:
            key = delivery_job_id(row.idempotency_key)
            await redis.delete(f"arq:job:{key}", f"arq:retry:{key}")
            await redis.zrem("arq:queue", key)
            assert await job.status() == JobStatus.not_found

        slack_api.end_outage()
        async with worker_processes(settings, 1, tmp_path / "second") as [second]:
            row = await ask.wait_delivery_settled(timeout_s=60)
        assert_delivered_once(ask, row)
        assert row.delivery_attempts == attempts_before + 1, "one more attempt, by the second worker"
        assert second.events("pipeline.delivered"), second.log_tail()
        assert not second.events("pipeline.start"), "the question was not answered again"
        if not redis_keeps_the_job:
            assert second.events("queue.delivery_requeued"), second.log_tail()
        assert await metric(ask.stack, "deskmate_answers_undelivered") == 0
