"""Socket Mode: events, clicks and slash commands over a websocket the app opens itself — no public URL.

The web process starts it when ``slack_app_token`` (``xapp-…``) is set; ``deskmate slack socket`` runs it on
its own. Both dispatch to the same bolt app as HTTP, so behaviour is identical. An event (an ``events_api``
envelope) is acknowledged on the socket once it is in the inbox (:mod:`bot.slack.inbox`), as over HTTP: a process
that dies after the ack no longer loses it, another one takes it over. While Redis cannot take it, and for every
other envelope (slash commands, clicks), the envelope is acknowledged as soon as bolt acks. Several processes may
connect at once: Slack spreads envelopes over up to ten connections.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.adapter.socket_mode.internals import build_headers
from slack_bolt.async_app import AsyncApp
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from bot.core.log import get_logger
from bot.core.settings import Settings
from bot.runtime import build_runtime
from bot.slack.app import build_app, build_inbox
from bot.slack.client import close_session, ensure_session
from bot.slack.inbox import SlackInbox

log = get_logger(__name__)


class InboxSocketModeHandler(AsyncSocketModeHandler):
    """bolt's Socket Mode handler, with events acknowledged once the inbox has them."""

    def __init__(self, bolt: AsyncApp, app_token: str, inbox: SlackInbox | None) -> None:
        super().__init__(bolt, app_token, web_client=bolt.client)
        self.inbox = inbox

    async def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        payload = req.payload
        if (self.inbox is not None and req.type == "events_api" and isinstance(payload, dict)
                and payload.get("type") == "event_callback"):
            # the envelope's payload is the body Slack would have POSTed; the retry headers as over HTTP
            headers = {"content-type": "application/json", **{k: str(v) for k, v in (build_headers(req) or {}).items()}}
            if await self.inbox.accept(orjson.dumps(payload), headers):
                await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
                return
        await super().handle(client, req)


class SocketMode:
    def __init__(self, bolt: AsyncApp, settings: Settings, *, inbox: SlackInbox | None = None) -> None:
        assert settings.slack_app_token, "Socket Mode needs DESKMATE_SLACK_APP_TOKEN"
        self.bolt = bolt
        self.app_token: str = settings.slack_app_token
        self.inbox = inbox
        self.handler: AsyncSocketModeHandler | None = None
        self._connect: asyncio.Task[None] | None = None

    def _handler(self) -> AsyncSocketModeHandler:
        if self.handler is None:  # the SDK's client needs a running event loop to be built
            self.handler = InboxSocketModeHandler(self.bolt, self.app_token, self.inbox)
        return self.handler

    def start_in_background(self) -> None:
        """Connect without holding up the caller (the SDK retries a failed connection on its own)."""
        self._connect = asyncio.create_task(self._handler().connect_async())
        self._connect.add_done_callback(_log_connect_result)

    async def run_forever(self) -> None:
        await self._handler().connect_async()
        log.info("slack.socket_mode_connected")
        await asyncio.Event().wait()

    async def close(self) -> None:
        if self._connect is not None and not self._connect.done():
            self._connect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connect
        if self.handler is not None:
            await self.handler.close_async()


def _log_connect_result(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    if task.exception() is not None:
        log.error("slack.socket_mode_failed", error=repr(task.exception()))
    else:
        log.info("slack.socket_mode_connected")


async def run_socket_mode(settings: Settings) -> None:
    """``deskmate slack socket``: Socket Mode alone, with the web process's light runtime (its tracer scores
    votes)."""
    if not (settings.slack_bot_token and settings.slack_app_token):
        raise SystemExit("Socket Mode needs DESKMATE_SLACK_BOT_TOKEN and DESKMATE_SLACK_APP_TOKEN.")
    rt = await build_runtime(settings, worker=False)
    bolt, adapter = build_app(rt)
    ensure_session(adapter.client)
    inbox = build_inbox(adapter)
    socket = SocketMode(bolt, settings, inbox=inbox)
    inbox.start()
    try:
        await socket.run_forever()
    finally:
        await socket.close()
        await inbox.close()
        await adapter.drain()
        await close_session(adapter.client)
        await rt.aclose()
