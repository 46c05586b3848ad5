"""Socket Mode: the web process connects to the websocket URL apps.connections.open returns, acks each
envelope on the socket, and answers like over HTTP."""

from __future__ import annotations

from collections.abc import Callable

from bot.core.settings import Settings
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
