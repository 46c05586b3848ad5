"""A failed delivery is not a lost answer, on Teams: the fake Bot Framework connector, the real web app and worker.

The placeholder is replaced in place exactly once, whatever the connector does for a while: 5xx answers beyond the
quick tries made in the call, HTML error pages, an outage, a ``Retry-After`` too long to hold the call (the
delivery job waits it out in Redis). No second message is sent (before, updates that kept failing were sent as a
new message, leaving the placeholder). While failing, the answer is "answered, not yet delivered" on the
dashboard and in ``/metrics``; a permanent error (403: the bot was removed) is recorded as failed, not retried.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
import pytest
from arq.jobs import Job, JobStatus

from bot.core.settings import Settings
from bot.queue import delivery_job_id
from feedback.models import Interaction
from tests.bot.teams.conftest import activity, post, teams_settings
from tests.fakes.botframework import Call, FakeConnector
from tests.stack import Stack, enqueued_job, running_stack, running_worker

TOKEN = "dash-token-0123456789"
QUESTION = "How much is the daily meal allowance when I travel?"
FAST = {"delivery_backoff_s": 0.1, "delivery_backoff_max_s": 0.5, "metrics_cache_s": 0, "dashboard_token": TOKEN}


@dataclass
class Asked:
    stack: Stack
    connector: FakeConnector
    placeholder_id: str
    interaction_id: int

    async def row(self) -> Interaction:
        return await self.stack.row(self.interaction_id)

    async def wait_row(self, predicate: Callable[[Interaction], bool], timeout_s: float = 30.0) -> Interaction:
        return await self.stack.wait_row(self.interaction_id, predicate, timeout_s)

    async def settled(self, timeout_s: float = 30.0) -> Interaction:
        return await self.wait_row(lambda r: r.delivery_state in ("delivered", "failed"), timeout_s)

    def answers_shown(self) -> list[Call]:
        """Successful updates or sends that carry this answer's card."""
        return [c for c in self.connector.of_kind("update", "send", "reply")
                if c.card is not None and f'"iid": {self.interaction_id}' in json.dumps(c.card)]


@asynccontextmanager
async def asked(settings: Settings, connector: FakeConnector) -> AsyncIterator[Asked]:
    """The web app takes the message and posts the placeholder; the worker is not running yet."""
    connector.streaming_allowed = False  # placeholder-then-update (a stream's faults: test_streaming.py)
    async with running_stack(settings, worker=False) as stack:
        response = await post(stack, activity("message_personal", connector, text=QUESTION))
        assert response.status_code == 200, response.text
        [placeholder] = [c for c in connector.calls if c.kind == "reply" and c.activity_type == "message"]
        [row] = await stack.interactions()
        assert row.id is not None
        yield Asked(stack, connector, placeholder.response["id"], row.id)


def assert_replaced_once(ask: Asked, row: Interaction) -> None:
    [shown] = ask.answers_shown()
    assert (shown.kind, shown.activity_id) == ("update", ask.placeholder_id), "the placeholder was replaced"
    assert not ask.connector.of_kind("send"), "no second message"
    assert row.status == "answered" and row.delivery_state == "delivered"
    assert row.delivery["updated"] is True and row.delivery["activity_id"] == ask.placeholder_id


async def metric(stack: Stack, name: str) -> float:
    for line in (await stack.client.get("/metrics")).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return teams_settings(make_settings, **FAST)  # 4 quick tries in a call, 0.02 s apart


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Callable[[FakeConnector], None]


FAULTS = [
    Fault("503s beyond the tries made in a call", lambda c: c.fail_next(503, times=6, kind="update")),
    Fault("HTML 500 pages beyond the tries made in a call",
          lambda c: c.fail_next(500, times=6, kind="update", html=True)),
    Fault("an outage: HTML 503s for 1.5 s", lambda c: c.outage(1.5)),
    Fault("429s with Retry-After 0.5", lambda c: c.fail_next(429, times=6, kind="update", retry_after=0.5)),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
async def test_the_answer_replaces_the_placeholder_exactly_once_despite(
        fault: Fault, settings: Settings, connector: FakeConnector) -> None:
    async with asked(settings, connector) as ask:
        fault.inject(connector)
        async with running_worker(settings):
            row = await ask.settled()
            await ask.stack.settle()
    assert_replaced_once(ask, row)
    assert row.delivery_attempts >= 2 and row.delivery_error is not None, "the first attempt failed"


async def test_while_teams_is_down_the_answer_is_shown_as_not_yet_delivered(settings: Settings,
                                                                           connector: FakeConnector) -> None:
    async with asked(settings, connector) as ask:
        connector.outage(3600)
        async with running_worker(settings):
            failing = await ask.wait_row(lambda r: r.delivery_attempts >= 2)
            assert failing.status == "answered" and failing.delivery_state == "pending"
            assert "HTML error page" in (failing.delivery_error or "")
            assert await metric(ask.stack, "deskmate_answers_undelivered") == 1
            response = await ask.stack.client.get("/dashboard/api/delivery",
                                                  headers={"Authorization": f"Bearer {TOKEN}"})
            [shown] = response.json()["rows"]
            assert (shown["platform"], shown["label"]) == ("teams", "answered, not yet delivered")
            connector.end_outage()
            row = await ask.settled()
        assert_replaced_once(ask, row)
        assert await metric(ask.stack, "deskmate_answers_undelivered") == 0


async def test_a_retry_after_too_long_to_hold_the_call_defers_the_delivery_job(settings: Settings,
                                                                              connector: FakeConnector) -> None:
    async with asked(settings, connector) as ask:
        connector.fail_next(429, kind="update", retry_after=120)
        async with running_worker(settings):
            row = await ask.wait_row(lambda r: r.delivery_attempts >= 1)
            redis = ask.stack.web_runtime.redis
            key = delivery_job_id(row.idempotency_key)
            assert await (await enqueued_job(redis, key)).status() == JobStatus.deferred
            due_ms = await redis.zscore("arq:queue", key)
            assert due_ms is not None and due_ms / 1000 - time.time() >= 115, "Retry-After 120 honoured"
            assert row.delivery_state == "pending" and "429" in (row.delivery_error or "")
            assert len([c for c in connector.calls if c.kind == "update"]) == 1 and ask.answers_shown() == []


async def test_a_permanent_error_is_recorded_as_failed_and_not_retried(settings: Settings,
                                                                      connector: FakeConnector) -> None:
    async with asked(settings, connector) as ask:
        connector.fail_next(403, times=100)  # the bot was removed from the conversation
        async with running_worker(settings):
            row = await ask.settled()
            await ask.stack.settle()
            assert await Job(delivery_job_id(row.idempotency_key), ask.stack.web_runtime.redis).status() \
                == JobStatus.not_found, "never handed over to be retried"
        assert (row.status, row.delivery_state, row.delivery_attempts) == ("answered", "failed", 1)
        assert "403" in (row.delivery_error or "")
        assert [c.kind for c in connector.calls[-2:]] == ["update", "send"], "one update, one new message: no more"
        assert await metric(ask.stack, "deskmate_answers_delivery_failed_total") == 1

