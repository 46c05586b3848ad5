"""Socket Mode: the web process connects to the websocket URL apps.connections.open returns, acks each
envelope on the socket, and answers like over HTTP. An event is acknowledged once it is in the inbox (Redis), so
one that cannot be handed to intake yet is tried again, not lost."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from bot.core.settings import Settings
from bot.slack import inbox
from tests.bot.slack.conftest import PUBLIC, mention, slash_command
from tests.fakes.slack_api import FakeSlack
from tests.stack import running_stack


async def test_events_api_envelope_over_a_local_websocket(slack_settings: Callable[..., Settings],
                                                          slack_api: FakeSlack) -> None:
    settings = slack_settings(slack_app_token="xapp-1-test", slack_signing_secret=None)
    async with running_stack(settings) as stack:
        await slack_api.wait_socket_connected()
        opened = slack_api.calls_to("apps.connections.open")
        assert opened and opened[0].headers["authorization"] == "Bearer xapp-1-test"
        no_http = await stack.client.post("/slack/events", content=b"{}")
        assert no_http.status_code == 404, "no signing secret: no HTTP endpoint"

        event = mention("How do I book travel?")
        envelope_id = await slack_api.send_envelope("events_api", event)
        ack = await slack_api.wait_for_ack(envelope_id)
        assert ack == {"envelope_id": envelope_id}

        placeholder = await slack_api.wait_for("chat.postMessage")
        assert placeholder.args["channel"] == PUBLIC and placeholder.args["thread_ts"] == event["event"]["ts"]
        answer = await slack_api.wait_for("chat.update", ts=placeholder.response["ts"])
        assert "[1]" in answer.text_of_blocks
        rows = await stack.interactions()
        assert [r.idempotency_key for r in rows] == [f"slack:{event['event_id']}"]
        assert await went_through_the_inbox(stack.settings.redis_url)

        # a redelivered envelope (retry_attempt 1) is acked and not answered again
        again = await slack_api.send_envelope("events_api", event, retry_attempt=1)
        await slack_api.wait_for_ack(again)

        # slash commands come as envelopes too; the ack carries the ephemeral reply
        from urllib.parse import parse_qsl

        form = dict(parse_qsl(slash_command("help", response_url=slack_api.response_url())))
        command_id = await slack_api.send_envelope("slash_commands", form)
        command_ack = await slack_api.wait_for_ack(command_id)
        assert "/deskmate ask" in command_ack["payload"]["text"]
        assert len(await stack.interactions()) == 1
        assert len(slack_api.calls_to("chat.update")) == 1


async def test_deskmate_slack_socket_runs_socket_mode_on_its_own(slack_settings: Callable[..., Settings],
                                                                 slack_api: FakeSlack) -> None:
    import asyncio
    import contextlib

    from bot.slack.socket_mode import run_socket_mode

    settings = slack_settings(slack_app_token="xapp-1-test", slack_signing_secret=None)
    task = asyncio.create_task(run_socket_mode(settings))
    try:
        await slack_api.wait_socket_connected(timeout=30)
        envelope_id = await slack_api.send_envelope("events_api", mention("How do I book travel?"))
        assert await slack_api.wait_for_ack(envelope_id) == {"envelope_id": envelope_id}
        placeholder = await slack_api.wait_for("chat.postMessage")
        assert placeholder.args["channel"] == PUBLIC
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def went_through_the_inbox(redis_url: str) -> bool:
    """Something was appended to the inbox, and nothing is left in it."""
    redis = Redis.from_url(redis_url)
    try:
        info = await redis.xinfo_stream(inbox.STREAM)
        return bool(info["last-generated-id"] != b"0-0" and info["length"] == 0)
    finally:
        await redis.aclose()


async def test_an_event_acked_on_the_socket_that_intake_cannot_take_yet_is_answered_later(
        slack_settings: Callable[..., Settings], slack_api: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    """bolt cannot authorize the event the first time (auth.test failing). Acknowledged straight through bolt, as
    before the inbox, it was lost: bolt answers the failure with a 200 and Slack does not send the event again.
    Acknowledged from the inbox, it stays there and is tried again."""
    monkeypatch.setattr(inbox, "RECLAIM_IDLE_S", 0.2)  # tried again after 0.2 s (60 s in production)
    monkeypatch.setattr(inbox, "RECLAIM_EVERY_S", 0.1)
    slack_api.fail("auth.test", "invalid_auth", times=1)
    settings = slack_settings(slack_app_token="xapp-1-test", slack_signing_secret=None)
    async with running_stack(settings) as stack:
        await slack_api.wait_socket_connected()
        envelope_id = await slack_api.send_envelope("events_api", mention("How do I book travel?"))
        assert await slack_api.wait_for_ack(envelope_id) == {"envelope_id": envelope_id}

        placeholder = await slack_api.wait_for("chat.postMessage")
        await slack_api.wait_for("chat.update", ts=placeholder.response["ts"])
        await stack.settle()
        assert len(slack_api.calls_to("auth.test")) == 2, "refused once, then authorized"
        assert len(await stack.interactions()) == 1 and len(slack_api.calls_to("chat.postMessage")) == 1
