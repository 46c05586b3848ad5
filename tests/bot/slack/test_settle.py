"""The harness's positive signals, checked against an event that does act: ``Stack.settle()`` and
``Stack.wait_final`` return only once the work is done, so the "nothing happened" tests that rely on them
(ignored events, forged requests, unknown clicks) cannot pass merely because they looked too early."""

from __future__ import annotations

from bot.core.types import FINAL_STATUSES
from tests.bot.slack.conftest import SlackClient, mention
from tests.fakes.slack_api import FakeSlack
from tests.stack import Stack, inbox_drained, settle_listeners


async def test_settle_returns_after_the_listener_and_the_worker_have_acted(
        slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack) -> None:
    response = await slack.event(mention("How do I book travel?"))
    assert response.status_code == 200
    await slack_stack.settle()

    rows = await slack_stack.interactions()
    assert len(rows) == 1 and rows[0].status in FINAL_STATUSES, "recorded by the listener, answered by the worker"
    placeholder = slack_api.calls_to("chat.postMessage")
    assert len(placeholder) == 1
    assert [c.args["ts"] for c in slack_api.calls_to("chat.update")] == [placeholder[0].response["ts"]]
    assert rows[0].delivery.get("ts") == placeholder[0].response["ts"], "delivery recorded before settle() returned"


async def test_wait_final_returns_after_delivery_is_recorded(
        slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack) -> None:
    await slack.event(mention("How many days of annual leave do I get?"))
    await inbox_drained(slack_stack.web_runtime.redis)  # the question is recorded and queued;
    await settle_listeners()  # the worker may still be answering
    placeholder = await slack_api.wait_for("chat.postMessage")
    [row] = await slack_stack.interactions()
    assert row.id is not None
    final = await slack_stack.wait_final(row.id)
    assert final.status in FINAL_STATUSES
    assert final.delivery.get("ts") == placeholder.response["ts"]
    assert "deliver" in final.latency_ms
