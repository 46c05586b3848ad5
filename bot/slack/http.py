"""Slack on the web process: ``POST /slack/events`` (Events API, interactivity and the slash command share
it), and Socket Mode alongside when an app token is set.

The route exists only when a bot token and a signing secret are configured: bolt verifies every request's
``X-Slack-Signature`` (HMAC-SHA256 of ``v0:{timestamp}:{body}``) and rejects stale timestamps with a 401 before
any listener — so a forged request never reaches the database or the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp

from bot.core.log import get_logger
from bot.runtime import Runtime
from bot.slack.app import build_app, configured
from bot.slack.client import close_session, ensure_session
from bot.slack.socket_mode import SocketMode

log = get_logger(__name__)

EVENTS_PATH = "/slack/events"
BOLT_APP = web.AppKey("slack_bolt_app", AsyncApp)


def setup(app: web.Application, rt: Runtime) -> None:
    settings = rt.settings
    if not configured(settings):
        if settings.slack_bot_token or settings.slack_signing_secret or settings.slack_app_token:
            log.warning("slack.incomplete_configuration",
                        hint="set DESKMATE_SLACK_BOT_TOKEN and DESKMATE_SLACK_SIGNING_SECRET (HTTP) "
                             "or DESKMATE_SLACK_APP_TOKEN (Socket Mode)")
        return
    bolt, adapter = build_app(rt)
    app[BOLT_APP] = bolt

    if settings.slack_signing_secret:
        async def slack_events(request: web.Request) -> web.Response:
            return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

        app.router.add_post(EVENTS_PATH, slack_events)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        ensure_session(adapter.client)
        socket: SocketMode | None = None
        if settings.slack_app_token:
            socket = SocketMode(bolt, settings)
            socket.start_in_background()
        log.info("slack.ready", http=bool(settings.slack_signing_secret), socket_mode=socket is not None)
        yield
        if socket is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(socket.close(), 5)
        await adapter.drain()
        await close_session(adapter.client)

    app.cleanup_ctx.append(lifecycle)
