"""The Slack inbox (``bot/slack/inbox.py``): an event acknowledged at the door stays in Redis until intake has it.
An event left behind by a web process that stopped is answered by another one, and only once. An event that keeps
failing is set aside, not retried for ever. While Redis cannot take events, bolt acknowledges and hands them over in
the web process, as before the inbox."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.core.settings import Settings
from bot.core.types import FINAL_STATUSES
from bot.core.types import Question
from bot.intake import CLAIM_PREFIX, Intake, Submitted
from bot.slack import inbox
from tests.bot.slack.conftest import SlackClient, mention
from tests.bot.tracing.helpers import RecordingLog
from tests.fakes.redis_server import RedisServer
from tests.fakes.slack_api import FakeSlack
from tests.stack import Stack, inbox_drained, running_stack
from tests.waiting import wait_until

STOPPED_CONSUMER = "web-that-stopped:4242:abcdef"


@pytest.fixture
def quick_takeover(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries idle for 0.2 s count as left behind (60 s in production), looked for every 0.1 s."""
    monkeypatch.setattr(inbox, "RECLAIM_IDLE_S", 0.2)
    monkeypatch.setattr(inbox, "RECLAIM_EVERY_S", 0.1)


@pytest.fixture
def quick_forgetting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A consumer idle for 0.2 s with nothing pending counts as gone (an hour in production), looked for every
    0.1 s (ten minutes)."""
    monkeypatch.setattr(inbox, "DEPARTED_IDLE_S", 0.2)
    monkeypatch.setattr(inbox, "FORGET_EVERY_S", 0.1)


@pytest.fixture
def inbox_log(monkeypatch: pytest.MonkeyPatch) -> RecordingLog:
    """What the inbox logs."""
    recorder = RecordingLog()
    monkeypatch.setattr(inbox, "log", recorder)
    return recorder


@pytest.fixture
def few_deliveries(monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry is set aside after two deliveries (five in production)."""
    monkeypatch.setattr(inbox, "MAX_DELIVERIES", 2)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def left_behind(redis: Redis, payload: dict[str, Any]) -> bytes:
    """Put ``payload`` in the inbox as a web process that took it and stopped would leave it: delivered to that
    process's consumer and never acknowledged. One transaction, so a running consumer cannot read it first."""
    try:
        await redis.xgroup_create(inbox.STREAM, inbox.GROUP, id="0", mkstream=True)
    except Exception as exc:  # noqa: BLE001 - a running web process made the group already
        assert "BUSYGROUP" in str(exc)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xadd(inbox.STREAM, {"body": json.dumps(payload).encode(), "content-type": "application/json"})
        pipe.xreadgroup(inbox.GROUP, STOPPED_CONSUMER, {inbox.STREAM: ">"}, count=1)
        entry_id, _read = await pipe.execute()
    return entry_id  # type: ignore[no-any-return]


async def test_an_event_left_behind_before_it_was_recorded_is_answered_once_by_another_web_process(
        quick_takeover: None, quick_forgetting: None, slack_settings: Callable[..., Settings], slack_api: FakeSlack,
        redis: Redis) -> None:
    payload = mention("How do I book travel?")
    await left_behind(redis, payload)
    # the process that stopped had claimed the event for intake: a plain redelivery would look like a duplicate
    await redis.set(f"{CLAIM_PREFIX}slack:{payload['event_id']}", b"1")

    async with running_stack(slack_settings()) as stack:
        placeholder = await slack_api.wait_for("chat.postMessage")
        await slack_api.wait_for("chat.update", ts=placeholder.response["ts"])
        await stack.settle()
        [row] = await stack.interactions()
        assert row.status in FINAL_STATUSES and row.question_payload["text"] == "How do I book travel?"
        await consumer_forgotten(redis, STOPPED_CONSUMER)  # its entry taken over, the process gone: its name too
    assert len(slack_api.calls_to("chat.postMessage")) == 1 and len(slack_api.calls_to("chat.update")) == 1
    assert await redis.xlen(inbox.STREAM) == 0, "handed over, then removed"
    assert await redis.xpending(inbox.STREAM, inbox.GROUP) == {"pending": 0, "min": None, "max": None,
                                                               "consumers": []}


async def test_an_event_left_behind_after_it_was_recorded_is_not_answered_twice(
        quick_takeover: None, slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack, redis: Redis) -> None:
    payload = mention("How many days of annual leave do I get?")
    assert (await slack.event(payload)).status_code == 200
    first = await slack_api.wait_for("chat.postMessage")
    await slack_api.wait_for("chat.update", ts=first.response["ts"])
    await slack_stack.settle()

    # as if the process that handed it over had stopped before removing it from the inbox
    await left_behind(redis, payload)
    second = await slack_api.wait_for("chat.postMessage", count=2)
    deleted = await slack_api.wait_for("chat.delete")
    await slack_stack.settle()
    assert deleted.args["ts"] == second.response["ts"], "the second placeholder is taken back"
    assert len(await slack_stack.interactions()) == 1 and len(slack_api.calls_to("chat.update")) == 1
    assert await redis.xlen(inbox.STREAM) == 0


async def test_an_event_that_keeps_failing_is_set_aside_and_answered_once_an_operator_puts_it_back(
        quick_takeover: None, few_deliveries: None, slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack,
        redis: Redis, inbox_log: RecordingLog) -> None:
    slack_api.fail("auth.test", "invalid_auth", times=2)  # bolt cannot authorize: it answers 200, nothing runs
    payload = mention("How do I book travel?")
    response = await slack.event(payload)
    assert response.status_code == 200, "acknowledged at the door: Slack must not retry it"

    await inbox_drained(redis)
    [(_, dead)] = await redis.xrange(inbox.DEAD)
    assert json.loads(dead[b"body"]) == payload, "kept for an operator, as Slack sent it"
    assert len(slack_api.calls_to("auth.test")) == 2, "delivered twice (MAX_DELIVERIES), then set aside"
    assert await slack_stack.interactions() == [] and slack_api.calls_to("chat.postMessage") == []
    assert [fields["event_id"] for event, fields in inbox_log.at("error") if event == "slack.inbox_dead"] == [
        payload["event_id"]]
    assert await inbox.status(redis) == {"waiting": 0, "in_hand": 0, "set_aside": 1}
    scraped = (await slack.http.get("/metrics")).text
    assert 'deskmate_slack_inbox_events{state="set_aside"} 1.0' in scraped, "an operator's alert can see it"
    assert 'deskmate_slack_inbox_events{state="waiting"} 0.0' in scraped

    # the cause fixed (Slack authorizes again): `deskmate slack inbox --retry-set-aside`
    assert await inbox.retry_set_aside(redis) == 1
    placeholder = await slack_api.wait_for("chat.postMessage")
    await slack_api.wait_for("chat.update", ts=placeholder.response["ts"])
    await slack_stack.settle()
    assert len(await slack_stack.interactions()) == 1
    assert await inbox.status(redis) == {"waiting": 0, "in_hand": 0, "set_aside": 0}


async def test_while_redis_cannot_take_an_event_bolt_acknowledges_it_and_keeps_the_question(
        slack_settings: Callable[..., Settings], slack_api: FakeSlack, redis_server: RedisServer,
        inbox_log: RecordingLog) -> None:
    async with running_stack(slack_settings(), worker=False) as stack:
        redis_server.stop()
        try:
            response = await SlackClient(stack.client).event(mention("How do I book travel?"))
            assert response.status_code == 200
            placeholder = await slack_api.wait_for("chat.postMessage")
            await stack.settle()
            [row] = await stack.interactions()
        finally:
            redis_server.start()
    assert row.status == "pending", "recorded: the sweeper enqueues it once Redis is back"
    assert row.question_payload["reply_target"]["placeholder_ts"] == placeholder.response["ts"]
    assert "slack.inbox_unavailable" in [event for event, _ in inbox_log.at("warning")]


async def test_metrics_show_how_long_the_oldest_event_has_waited_for_intake(redis: Redis) -> None:
    """An intake that stopped handing events over (every web process's consumer stuck) shows as a growing age."""
    await redis.delete(inbox.STREAM)
    assert await figures_of(redis) == {"waiting": 0, "in_hand": 0, "set_aside": 0, "oldest_age_s": 0.0}
    ninety_s_ago = int(time.time() * 1000) - 90_000
    await redis.xadd(inbox.STREAM, {"body": b"{}"}, id=f"{ninety_s_ago}-0")
    await redis.xadd(inbox.STREAM, {"body": b"{}"})
    shown = await figures_of(redis)
    assert shown["waiting"] == 2 and 89 < shown["oldest_age_s"] < 120
    await redis.delete(inbox.STREAM)


async def consumer_forgotten(redis: Redis, name: str, timeout_s: float = 10.0) -> None:
    async def gone() -> bool:
        return name not in {c["name"].decode() for c in await redis.xinfo_consumers(inbox.STREAM, inbox.GROUP)}

    await wait_until(gone, timeout_s=timeout_s, what=f"{name} gone from the consumer group")


async def figures_of(redis: Redis) -> dict[str, float]:
    events, age = await inbox.figures(redis)
    shown = {sample.labels["state"]: sample.value for sample in events.samples}
    return shown | {"oldest_age_s": age.samples[0].value}


async def test_the_names_of_web_processes_gone_leave_the_group_once_they_hold_nothing(redis: Redis) -> None:
    """Every start of a web process reads under a new name; without this the group would list every process
    that ever ran. A process gone while holding an entry keeps its name until the entry is taken over."""
    await redis.delete(inbox.STREAM)
    assert await inbox.forget_departed(redis, "me", idle_s=0) == 0, "no inbox yet: nothing to do"
    await redis.xadd(inbox.STREAM, {"body": b"{}"})
    assert await inbox.forget_departed(redis, "me", idle_s=0) == 0, "no consumer group yet: nothing to do"
    await redis.xgroup_create(inbox.STREAM, inbox.GROUP, id="0", mkstream=True)
    for name in ("gone-empty", "gone-holding", "me"):
        await redis.xadd(inbox.STREAM, {"body": b"{}"})
        [[_, [(entry_id, _)]]] = await redis.xreadgroup(inbox.GROUP, name, {inbox.STREAM: ">"}, count=1)
        if name != "gone-holding":
            await redis.xack(inbox.STREAM, inbox.GROUP, entry_id)

    assert await inbox.forget_departed(redis, "me", idle_s=3600) == 0, "all three read just now"
    await asyncio.sleep(0.05)  # idle for longer than 10 ms
    assert await inbox.forget_departed(redis, "me", idle_s=0.01) == 1
    left = {c["name"].decode(): c["pending"] for c in await redis.xinfo_consumers(inbox.STREAM, inbox.GROUP)}
    assert left == {"gone-holding": 1, "me": 0}, "the one holding an entry stays until it is taken over"
    await redis.delete(inbox.STREAM)


async def test_an_inbox_deleted_under_a_waiting_consumer_is_made_again_without_a_fault(
        slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack, redis: Redis, inbox_log: RecordingLog) -> None:
    """Redis flushed (or the stream deleted by hand) while the consumers wait for entries: they make the inbox
    again and go on, with no error logged and no back-off before the next event."""
    assert (await slack.event(mention("How do I book travel?"))).status_code == 200
    await slack_api.wait_for("chat.postMessage")
    await slack_stack.settle()
    await redis.delete(inbox.STREAM)  # the consumer is waiting in its read (XREADGROUP BLOCK)

    assert (await slack.event(mention("How many days of annual leave do I get?"))).status_code == 200
    await inbox_drained(redis)
    await slack_stack.settle()
    assert len(await slack_stack.interactions()) == 2
    assert [event for event, _ in inbox_log.at("warning")] == []


async def test_an_event_whose_intake_fails_unexpectedly_is_tried_again_not_lost(
        quick_takeover: None, slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack,
        monkeypatch: pytest.MonkeyPatch, inbox_log: RecordingLog) -> None:
    """A fault intake does not handle itself (here: an error nobody expected, once). Acknowledged by bolt, the
    event was lost: the failure was logged and Slack had its 200. From the inbox, it is tried again."""
    submit = Intake.submit
    calls: list[str] = []

    async def fails_once(self: Intake, question: Question, **kwargs: Any) -> Submitted:
        calls.append(question.idempotency_key)
        if len(calls) == 1:
            raise RuntimeError("something nobody expected")
        return await submit(self, question, **kwargs)

    monkeypatch.setattr(Intake, "submit", fails_once)
    payload = mention("How do I book travel?")
    assert (await slack.event(payload)).status_code == 200

    placeholder = await slack_api.wait_for("chat.postMessage")
    await slack_api.wait_for("chat.update", ts=placeholder.response["ts"])
    await slack_stack.settle()
    assert calls == [f"slack:{payload['event_id']}"] * 2, "failed, then taken over and handed to intake again"
    assert len(await slack_stack.interactions()) == 1
    assert [e for e, _ in inbox_log.at("error")] == ["slack.inbox_event_failed"]


async def test_an_event_whose_intake_hangs_is_stopped_and_tried_again(
        quick_takeover: None, monkeypatch: pytest.MonkeyPatch, slack_settings: Callable[..., Settings],
        slack_api: FakeSlack, inbox_log: RecordingLog) -> None:
    """Intake waits on something that never answers (a query on a database that stopped replying). The consumer
    stops the dispatch after its timeout and the event is tried again; the slot is not held for ever."""
    monkeypatch.setattr(inbox, "DISPATCH_TIMEOUT_S", 0.5)  # 120 s in production
    submit = Intake.submit
    calls: list[str] = []

    async def hangs_once(self: Intake, question: Question, **kwargs: Any) -> Submitted:
        calls.append(question.idempotency_key)
        if len(calls) == 1:
            await asyncio.Event().wait()  # never set
        return await submit(self, question, **kwargs)

    monkeypatch.setattr(Intake, "submit", hangs_once)
    async with running_stack(slack_settings()) as stack:
        payload = mention("How do I book travel?")
        assert (await SlackClient(stack.client).event(payload)).status_code == 200
        placeholder = await slack_api.wait_for("chat.postMessage")
        await slack_api.wait_for("chat.update", ts=placeholder.response["ts"])
        await stack.settle()
        assert len(calls) == 2 and len(await stack.interactions()) == 1
    assert [fields.get("error", "")[:12] for e, fields in inbox_log.at("error") if e == "slack.inbox_event_failed"] \
        == ["TimeoutError"]


async def test_a_question_the_database_cannot_take_now_is_answered_once_it_can(
        quick_takeover: None, monkeypatch: pytest.MonkeyPatch, slack_stack: Stack, slack: SlackClient,
        slack_api: FakeSlack) -> None:
    """The database refuses the question (locked past intake's own retries, or away). The event stays in the
    inbox; its placeholder is taken back, and no apology is posted while tries are left. Once the database takes
    it, it is answered — late rather than never, and without the user asking again."""
    from sqlalchemy.exc import OperationalError

    from bot import intake as intake_module
    from feedback.interactions import InteractionStore

    record = InteractionStore.record_pending
    refusals: list[str] = []

    async def locked_once(self: InteractionStore, question: Question) -> tuple[int, bool]:
        if not refusals:
            refusals.append(question.idempotency_key)
            raise OperationalError("INSERT …", {}, Exception("database is locked"))
        return await record(self, question)

    monkeypatch.setattr(InteractionStore, "record_pending", locked_once)
    monkeypatch.setattr(intake_module, "RECORD_BACKOFF_S", ())  # intake gives up at once
    assert (await slack.event(mention("How do I book travel?"))).status_code == 200

    first = await slack_api.wait_for("chat.postMessage")
    deleted = await slack_api.wait_for("chat.delete")
    assert deleted.args["ts"] == first.response["ts"], "the first placeholder is taken back, no apology"
    second = await slack_api.wait_for("chat.postMessage", count=2)
    answer = await slack_api.wait_for("chat.update", ts=second.response["ts"])
    await slack_stack.settle()
    assert "couldn't take your question" not in answer.args["text"]
    [row] = await slack_stack.interactions()
    assert row.status in FINAL_STATUSES and len(refusals) == 1
