"""Socket Mode: events, clicks and slash commands over a websocket the app opens itself — no public URL.

The web process starts it when ``slack_app_token`` (``xapp-…``) is set; ``deskmate slack socket`` runs it on
its own. Both dispatch to the same bolt app as HTTP, so behaviour is identical; each envelope is acknowledged
on the socket as soon as bolt acks. Several processes may connect at once: Slack spreads envelopes over up to
ten connections.
"""

from __future__ import annotations

import asyncio
import contextlib

from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp

from bot.core.log import get_logger
from bot.core.settings import Settings
from bot.runtime import build_runtime
from bot.slack.app import build_app
from bot.slack.client import close_session, ensure_session

log = get_logger(__name__)


class SocketMode:
    def __init__(self, bolt: AsyncApp, settings: Settings) -> None:
        assert settings.slack_app_token, "Socket Mode needs DESKMATE_SLACK_APP_TOKEN"
        self.bolt = bolt
        self.settings = settings
        self.handler: AsyncSocketModeHandler | None = None
        self._connect: asyncio.Task[None] | None = None

    def _handler(self) -> AsyncSocketModeHandler:
        if self.handler is None:  # the SDK's client needs a running event loop to be built
            self.handler = AsyncSocketModeHandler(self.bolt, self.settings.slack_app_token,
                                                  web_client=self.bolt.client)
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
    socket = SocketMode(bolt, settings)
    try:
        await socket.run_forever()
    finally:
        await socket.close()
        await adapter.drain()
        await close_session(adapter.client)
        await rt.aclose()
