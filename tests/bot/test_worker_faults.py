"""Faults, with real processes: Redis stopped under a running worker, a worker SIGKILLed mid-answer.

The workers are ``python -m bot.cli worker`` subprocesses (:func:`tests.stack.worker_processes`) on the test's
Redis (a real ``redis-server``, stopped and restarted), database and the shared sample index; the web side runs
in the test's event loop, as do the local fakes of the Anthropic and Slack APIs the workers call.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from arq.worker import func

from bot.core.settings import Settings
from bot.core.types import Platform, Question, Status
from bot.resilient_worker import ResilientWorker
from bot.redis_conn import redis_settings
from bot.runtime import build_runtime
from tests.fakes.anthropic_server import Reply
from tests.fakes.redis_server import RedisServer
from tests.fakes.slack_api import start_fake_slack
from tests.fakes.tcp_proxy import tcp_proxy
from tests.stack import queue_drained, running_stack, wait_final, worker_processes
from tests.waiting import wait_until

QUESTION = "How do I connect to the VPN from home?"


def claude_settings(make_settings: Callable[..., Settings], fake: Any, **extra: Any) -> Settings:
    return make_settings(anthropic_api_key="sk-test", anthropic_base_url=fake.url, llm_max_retries=0,
                         llm_timeout_s=60, **extra)


async def test_a_worker_rides_out_a_redis_outage_and_answers_what_was_asked_during_and_after_it(
    make_settings: Callable[..., Settings], redis_server: RedisServer, fake_anthropic: Any, tmp_path: Path
) -> None:
    """Redis stopped for a few seconds under a running worker: the process stays up, its /readyz says so, it
    reconnects, and answers both the question asked while Redis was down (recorded in the database, enqueued by
    the sweeper) and one asked after."""
    settings = claude_settings(make_settings, fake_anthropic, sweeper_interval_s=1, sweeper_min_age_s=0.5,
                               worker_redis_retry_max_s=1.0)
    async with running_stack(settings, worker=False) as stack, \
            worker_processes(settings, 1, tmp_path) as [worker]:
        first = await stack.client.post("/chat/api/ask", json={"text": QUESTION, "conversation_id": "before"})
        assert (await stack.wait_final(first.json()["interaction_id"])).status == Status.ANSWERED

        redis_server.stop()
        try:
            down = await worker.wait_readyz(503, timeout_s=15)
            assert down["checks"]["queue"].startswith("error: Redis lost") and down["checks"]["redis"] != "ok"
            response = await stack.client.post("/chat/api/ask", json={"text": "How many days of annual leave do I "
                                                                      "get?", "conversation_id": "during"})
            assert response.status_code == 202 and response.json()["queued"] is False
            during_id = response.json()["interaction_id"]
            await asyncio.sleep(3)  # an outage of a few seconds
            assert worker.alive, worker.log_tail()
        finally:
            redis_server.start()
        back = time.monotonic()
        await worker.wait_readyz(200, timeout_s=15)
        reconnect_s = time.monotonic() - back

        during = await stack.wait_final(during_id, timeout_s=30)  # enqueued by the worker's sweeper
        during_s = time.monotonic() - back
        after = await stack.client.post("/chat/api/ask", json={"text": QUESTION, "conversation_id": "after"})
        assert after.status_code == 202 and after.json()["queued"] is True
        answered_after = await stack.wait_final(after.json()["interaction_id"], timeout_s=30)
        assert worker.alive, worker.log_tail()
        lost, back_again = worker.events("worker.redis_lost"), worker.events("worker.redis_back")
    print(f"worker ready again {reconnect_s:.1f} s after Redis came back; the question asked during the outage "
          f"answered {during_s:.1f} s after")
    assert during.status == Status.ANSWERED and answered_after.status == Status.ANSWERED
    assert during.attempts == 1 and answered_after.attempts == 1
    assert len(lost) == 1 and len(back_again) == 1, (lost, back_again)
    assert back_again[0]["down_s"] >= 3


async def test_a_killed_workers_question_is_answered_by_another_worker_within_seconds_and_once(
    make_settings: Callable[..., Settings], fake_anthropic: Any, tmp_path: Path
) -> None:
    """Two workers; the one answering a question is SIGKILLed while it waits on the LLM. Its lease lapses and
    the other worker answers the question — within 30 s (arq alone: job timeout + 10 s), and exactly once: one
    final answer, one Slack message, one ``pipeline.done``. While the first worker lives, its renewed lease keeps
    the question from the other, though the answer takes longer than a lease."""
    lease_s = 3.0
    async with start_fake_slack() as slack:
        slack.channels["D1"] = "im"
        settings = claude_settings(make_settings, fake_anthropic, slack_bot_token="xoxb-test",
                                   slack_api_url=slack.api_url, worker_lease_s=lease_s, worker_lease_renew_s=1.0)
        fake_anthropic.script(Reply.answer(delay_s=120))  # the first LLM call hangs: that job is mid-answer
        web = await build_runtime(settings, worker=False)
        try:
            async with worker_processes(settings, 2, tmp_path) as workers:
                question = Question(idempotency_key=f"test:{uuid.uuid4().hex}", platform=Platform.SLACK,
                                    workspace="T1", channel="D1", thread="", user="U1", text=QUESTION,
                                    channel_type="im")
                submitted = await web.intake.submit(question)
                assert submitted.enqueued and submitted.interaction_id is not None
                interaction_id = submitted.interaction_id
                await wait_until(polled(lambda: len(fake_anthropic.message_requests) == 1), timeout_s=30)
                await wait_until(polled(lambda: any(interaction_id in w.handled() for w in workers)), timeout_s=10)
                [victim] = [w for w in workers if interaction_id in w.handled()]
                [survivor] = [w for w in workers if w is not victim]

                await asyncio.sleep(2 * lease_s)  # mid-answer for two leases: renewed, not handed on
                assert len(fake_anthropic.message_requests) == 1 and interaction_id not in survivor.handled()

                victim.kill()
                killed = time.monotonic()
                row = await wait_final(web.db, interaction_id, timeout_s=30, redis=web.redis)
                recovery_s = time.monotonic() - killed
                await slack.wait_for("chat.postMessage", timeout=10)
                await queue_drained(web.redis)
                done = [line for w in workers for line in w.events("pipeline.done")
                        if line.get("interaction_id") == interaction_id]
                assert survivor.alive, survivor.log_tail()
        finally:
            await web.aclose()
    print(f"the killed worker's question was answered {recovery_s:.1f} s after the kill (lease {lease_s} s)")
    assert row.status == Status.ANSWERED and not row.fallback
    assert interaction_id in survivor.handled() and len(done) == 1 and done[0]["job_try"] == 2
    [ready] = survivor.events("worker.ready")
    assert ready["frozen_objects"] > 100_000, "the worker took its loaded state out of the full collections"
    assert row.attempts == 2, "the killed attempt, then the survivor's"
    assert len(fake_anthropic.message_requests) == 2
    assert len(slack.calls_to("chat.postMessage", channel="D1")) == 1
    assert recovery_s < 30


async def test_a_worker_whose_redis_connection_goes_silent_notices_and_comes_back(
    make_settings: Callable[..., Settings], redis_server: RedisServer, fake_anthropic: Any, tmp_path: Path
) -> None:
    """Redis unreachable without a reset (a partition, a host gone behind a firewall): the worker's commands get no
    reply. Its reads time out (``DESKMATE_REDIS_READ_TIMEOUT_S``), it says "Redis lost" on /readyz instead of
    standing still while reporting ok, and once the network is back it answers what was asked meanwhile."""
    settings = claude_settings(make_settings, fake_anthropic, worker_redis_retry_max_s=1.0)
    async with running_stack(settings, worker=False) as stack, tcp_proxy("127.0.0.1", redis_server.port) as net, \
            worker_processes(settings, 1, tmp_path, redis_url=f"redis://127.0.0.1:{net.port}/0",
                             redis_read_timeout_s=2) as [worker]:
        first = await stack.client.post("/chat/api/ask", json={"text": QUESTION, "conversation_id": "before"})
        assert (await stack.wait_final(first.json()["interaction_id"])).status == Status.ANSWERED

        net.pause()
        try:
            # the poll loop itself notices (not only /readyz's own ping): without a read timeout it waited forever
            async def redis_lost() -> bool:
                _, body = await worker.readyz()
                return bool(body.get("checks", {}).get("queue", "").startswith("error: Redis lost"))

            await wait_until(redis_lost, timeout_s=20, interval_s=0.1, what="the worker's /readyz showing Redis lost")
            asked = await stack.client.post("/chat/api/ask", json={"text": QUESTION, "conversation_id": "during"})
            assert asked.json()["queued"] is True  # the web process reaches Redis: only the worker is cut off
            assert worker.alive, worker.log_tail()
        finally:
            net.resume()
        await worker.wait_readyz(200, timeout_s=20)
        during = await stack.wait_final(asked.json()["interaction_id"], timeout_s=30)
        assert worker.alive, worker.log_tail()
    assert during.status == Status.ANSWERED and during.attempts == 1
    assert "Timeout" in worker.events("worker.redis_lost")[0]["error"]


def polled(condition: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """A plain (not async) condition as the probe :func:`wait_until` awaits."""
    async def probe() -> bool:
        return condition()

    return probe


# --- the lease, in process: short while the job runs, never put back after it ---------------------------------
async def test_a_running_jobs_lease_stays_short_and_ends_with_the_job(
    make_settings: Callable[..., Settings], arq_redis: ArqRedis
) -> None:
    """arq claims a job for the job timeout + 10 s; here the claim is one lease, renewed while the job runs
    (longer than several leases), and gone when it ends — a late renewal must not resurrect it."""
    settings = make_settings(worker_lease_s=1.0, worker_lease_renew_s=0.2)

    async def slow(ctx: dict[str, Any]) -> str:
        await asyncio.sleep(3)
        return "done"

    worker = ResilientWorker(functions=[func(slow, name="slow")], redis_settings=redis_settings(settings),
                             handle_signals=False, poll_delay=0.02, job_timeout=60, lease_s=1.0, lease_renew_s=0.2)
    task = asyncio.create_task(worker.main())
    try:
        job = await arq_redis.enqueue_job("slow", _job_id="lease-test")
        assert job is not None
        key = in_progress_key_prefix + "lease-test"
        ttls: list[int] = []
        while not await arq_redis.exists("arq:result:lease-test"):
            ttl = await arq_redis.pttl(key)
            if ttl != -2 or ttls:  # -2: no key (not claimed yet, or finished)
                ttls.append(ttl)
            await asyncio.sleep(0.05)
        running = ttls[:-3]  # the last samples may straddle the end of the job
        assert len(running) > 40 and all(0 < t <= 1000 for t in running), running
        await asyncio.sleep(0.5)  # more than two renewal intervals
        assert await arq_redis.exists(key) == 0
        assert await job.result(timeout=5) == "done"
    finally:
        worker.allow_pick_jobs = False
        await worker.close()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_jobs_polled_by_two_workers_at_once_each_run_once(
    make_settings: Callable[..., Settings], arq_redis: ArqRedis
) -> None:
    """Two workers poll the same queue every 10 ms and claim what they list in one script each: every job runs
    exactly once, and both workers take a share."""
    settings = make_settings()

    async def count(ctx: dict[str, Any], n: int) -> str:
        await ctx["redis"].incr(f"test:runs:{n}")
        await asyncio.sleep(0.05)
        return ctx["name"]

    workers = [ResilientWorker(functions=[func(count, name="count")], redis_settings=redis_settings(settings),
                               handle_signals=False, poll_delay=0.01, max_jobs=8, job_timeout=30, lease_s=5.0,
                               lease_renew_s=1.0, ctx={"name": name}) for name in ("a", "b")]
    tasks = [asyncio.create_task(w.main()) for w in workers]
    try:
        jobs = [await arq_redis.enqueue_job("count", n, _job_id=f"count-{n}") for n in range(60)]
        results = [await job.result(timeout=30) for job in jobs if job is not None]
        runs = [int(await arq_redis.get(f"test:runs:{n}") or 0) for n in range(60)]
    finally:
        for worker, task in zip(workers, tasks):
            worker.allow_pick_jobs = False
            await worker.close()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert len(results) == 60 and runs == [1] * 60
    assert set(results) == {"a", "b"}
    assert sum(w.jobs_complete for w in workers) == 60


async def test_a_lapsed_lease_is_taken_back_and_another_workers_claim_is_left_alone(
    make_settings: Callable[..., Settings], arq_redis: ArqRedis
) -> None:
    """Redis lost a running job's lease (an outage longer than a lease, a restart): the one renewal task takes it
    back; a job another worker claimed meanwhile keeps that worker's claim (it is only extended: both run it)."""
    settings = make_settings()
    release = asyncio.Event()

    async def held(ctx: dict[str, Any]) -> str:
        await release.wait()
        return "done"

    worker = ResilientWorker(functions=[func(held, name="held")], redis_settings=redis_settings(settings),
                             handle_signals=False, poll_delay=0.02, job_timeout=60, lease_s=1.0, lease_renew_s=0.1)
    task = asyncio.create_task(worker.main())
    mine, theirs = in_progress_key_prefix + "lapsed", in_progress_key_prefix + "taken"
    try:
        jobs = [await arq_redis.enqueue_job("held", _job_id=job_id) for job_id in ("lapsed", "taken")]
        await wait_for_redis(lambda: arq_redis.exists(mine, theirs), 2)
        await arq_redis.delete(mine)  # lapsed: nobody has it
        await arq_redis.set(theirs, b"other-worker", px=5000)  # lapsed, and another worker claimed it
        await wait_for_redis(lambda: arq_redis.exists(mine), 1)
        for _ in range(5):  # several renewals later: the other worker's claim is untouched, ours is renewed
            await asyncio.sleep(0.1)
            assert await arq_redis.get(theirs) == b"other-worker" and 0 < await arq_redis.pttl(mine) <= 1000
        release.set()
        assert [await job.result(timeout=10) for job in jobs if job is not None] == ["done", "done"]
        assert await arq_redis.exists(mine, theirs) == 0, "the finished jobs' keys are not put back"
    finally:
        release.set()
        worker.allow_pick_jobs = False
        await worker.close()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def wait_for_redis(read: Callable[[], Any], expected: int, timeout_s: float = 10.0) -> None:
    async def reached() -> bool:
        return bool(await read() == expected)

    await wait_until(reached, timeout_s=timeout_s, interval_s=0.02, what=f"the count at {expected}")
