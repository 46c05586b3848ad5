"""The worker's Teams deliverer against the fake connector: update in place, retries, fallback, no silent loss."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from botbuilder.schema import Activity

from bot.core.types import Answer, Question, Source
from bot.delivery import DeliveryFailed
from bot.teams import delivery as delivery_module
from bot.teams.activities import build_question
from bot.teams.delivery import TeamsDeliverer
from tests.bot.teams.conftest import activity
from tests.conftest import settings_for
from tests.fakes.botframework import FakeConnector


@pytest.fixture
def deliverer(tmp_path: Path) -> TeamsDeliverer:
    settings = settings_for(tmp_path, teams_delivery_attempts=4, teams_delivery_backoff_s=0.01)
    return TeamsDeliverer(settings)


def question(connector: FakeConnector, placeholder_id: str | None = "placeholder-1") -> Question:
    body = activity("message_channel_mention", connector)
    return build_question(Activity().deserialize(body), "How do I book travel?", placeholder_id=placeholder_id)


ANSWER = Answer(interaction_id=42, text="Book through the travel portal [1].",
                sources=[Source(number=1, doc_id="travel/booking", title="Booking travel", location="travel/booking.md")])


async def test_answer_replaces_the_placeholder(deliverer: TeamsDeliverer, connector: FakeConnector) -> None:
    q = question(connector)
    result = await deliverer.deliver(q, ANSWER)
    assert result == {"platform": "teams", "conversation_id": q.thread, "ok": True, "updated": True,
                      "activity_id": "placeholder-1"}
    [update] = connector.calls
    assert (update.kind, update.activity_id, update.conversation_id) == ("update", "placeholder-1", q.thread)
    assert update.body["id"] == "placeholder-1" and update.body["from"]["id"].startswith("28:")
    assert any("travel portal" in e.get("text", "") for e in update.card["body"])


@pytest.mark.parametrize("status", [429, 412, 502])
async def test_transient_failures_are_retried(deliverer: TeamsDeliverer, connector: FakeConnector, status: int) -> None:
    connector.fail_next(status, times=2, kind="update", retry_after=0 if status == 429 else None)
    result = await deliverer.deliver(question(connector), ANSWER)
    assert result["ok"] and result["updated"]
    assert [c.status for c in connector.calls] == [status, status, 200]


async def test_placeholder_that_cannot_be_updated_gets_a_new_message(deliverer: TeamsDeliverer,
                                                                     connector: FakeConnector) -> None:
    connector.fail_next(404, kind="update")  # e.g. the placeholder was deleted
    result = await deliverer.deliver(question(connector), ANSWER)
    assert result["ok"] and result["updated"] is False and "404" in result["update_error"]
    assert [(c.kind, c.status) for c in connector.calls] == [("update", 404), ("send", 200)]
    assert result["activity_id"] == connector.calls[-1].response["id"]


async def test_updates_that_keep_failing_are_retried_later_never_sent_as_a_second_message(
        deliverer: TeamsDeliverer, connector: FakeConnector) -> None:
    """A placeholder that cannot be updated *now* (the service fails) is still the one place the answer goes: the
    attempt is raised as retryable for the worker to try again later, not sent as a new message (it would show
    twice once the placeholder can be updated)."""
    connector.fail_next(503, times=4, kind="update")
    with pytest.raises(DeliveryFailed) as raised:
        await deliverer.deliver(question(connector), ANSWER)
    assert raised.value.retryable and "503" in raised.value.error
    assert [c.kind for c in connector.calls] == ["update"] * 4, "the in-call tries, and no new message"


async def test_an_html_error_page_is_retryable(deliverer: TeamsDeliverer, connector: FakeConnector) -> None:
    """A gateway's HTML 500 page (the connector client cannot even read it): transient, like a JSON 500."""
    connector.fail_next(500, times=4, kind="update", html=True)
    with pytest.raises(DeliveryFailed) as raised:
        await deliverer.deliver(question(connector), ANSWER)
    assert raised.value.retryable and "HTML error page" in raised.value.error
    assert [c.kind for c in connector.calls] == ["update"] * 4, "retried in the call like any 5xx; no new message"


async def test_a_long_retry_after_is_not_slept_in_the_call_but_reported(deliverer: TeamsDeliverer,
                                                                       connector: FakeConnector) -> None:
    connector.fail_next(429, kind="update", retry_after=120)
    started = time.monotonic()
    with pytest.raises(DeliveryFailed) as raised:
        await deliverer.deliver(question(connector), ANSWER)
    assert time.monotonic() - started < 5, "a 120 s wait is the worker's deferral, not a held call"
    assert raised.value.retryable and raised.value.retry_after_s == 120
    assert len(connector.calls) == 1


class RecordingLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        return lambda event, **_kw: self.events.append((level, event))


async def test_a_permanent_failure_is_raised_as_permanent(deliverer: TeamsDeliverer, connector: FakeConnector,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """403 (the bot was removed from the conversation): the update and the new message both fail for good."""
    recording = RecordingLog()
    monkeypatch.setattr(delivery_module, "log", recording)
    connector.fail_next(403, times=100)
    with pytest.raises(DeliveryFailed) as raised:
        await deliverer.deliver(question(connector), ANSWER)
    assert not raised.value.retryable and "403" in raised.value.error
    assert ("warning", "teams.delivery_attempt_failed") in recording.events
    assert [c.kind for c in connector.calls] == ["update", "send"], "4xx: no in-call retries"


async def test_an_unreachable_service_is_retryable(deliverer: TeamsDeliverer, connector: FakeConnector) -> None:
    body = activity("message_channel_mention", connector)
    body["serviceUrl"] = f"http://127.0.0.1:{free_port()}/amer/"  # nothing listens there
    q = build_question(Activity().deserialize(body), "How do I book travel?", placeholder_id="placeholder-1")
    with pytest.raises(DeliveryFailed) as raised:
        await deliverer.deliver(q, ANSWER)
    assert raised.value.retryable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_no_placeholder_sends_into_the_thread(deliverer: TeamsDeliverer, connector: FakeConnector) -> None:
    q = question(connector, placeholder_id=None)
    result = await deliverer.deliver(q, ANSWER)
    assert result["ok"] and result["updated"] is False
    [sent] = connector.calls
    assert sent.kind == "send" and sent.conversation_id == q.thread


async def test_failure_notice_goes_to_the_placeholder(deliverer: TeamsDeliverer, connector: FakeConnector) -> None:
    result = await deliverer.deliver_failure(question(connector), "Sorry — something went wrong.")
    assert result["ok"] and result["updated"]
    [update] = connector.calls
    assert update.kind == "update" and update.body["text"] == "Sorry — something went wrong."
