"""The slack-bolt ``AsyncApp`` both transports (HTTP in :mod:`bot.slack.http`, Socket Mode in
:mod:`bot.slack.socket_mode`) dispatch to.

``process_before_response=False``: bolt answers Slack as soon as ``ack()`` is called (events are acked
automatically) and runs the rest of a listener afterwards — the ack never waits for the database, Redis or the
Web API. Request signatures are checked by bolt (``X-Slack-Signature``, 5-minute timestamp window); Socket Mode
needs no signature. Events normally do not reach this app, over HTTP or Socket Mode: the web process acknowledges
them itself once they are in the inbox (:mod:`bot.slack.inbox`), whose consumers dispatch them to
:func:`build_inbox`.

A request no listener takes is handed to :func:`on_error` (``raise_error_for_unhandled_request``): an event
Deskmate does not handle (``pin_added``, ``team_join``, whatever the app is subscribed to) is acknowledged with a
200 and ignored — bolt's default 404 makes Slack retry the event and, if it keeps failing, disable the events URL.
Other unhandled requests (an unknown button, shortcut or command) keep bolt's 404.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.error import BoltUnhandledRequestError
from slack_bolt.response import BoltResponse

from bot.core.log import get_logger
from bot.core.settings import Settings
from bot.runtime import Runtime
from bot.slack import actions, commands, learned, listeners
from bot.slack.adapter import RecordLater, SlackAdapter
from bot.slack.client import web_client
from bot.slack.inbox import SlackInbox
from bot.slack.pacing import pacer_for

log = get_logger(__name__)


def configured(settings: Settings) -> bool:
    """A bot token and a way to receive events (a signing secret for HTTP, an app token for Socket Mode)."""
    return bool(settings.slack_bot_token and (settings.slack_signing_secret or settings.slack_app_token))


def build_app(rt: Runtime) -> tuple[AsyncApp, SlackAdapter]:
    settings = rt.settings
    client = web_client(settings)
    adapter = SlackAdapter(rt=rt, client=client, pacer=pacer_for(rt.redis, settings))
    app = _bolt(adapter, signing_secret=settings.slack_signing_secret or "", process_before_response=False)
    return app, adapter


def build_inbox(adapter: SlackAdapter) -> SlackInbox:
    """The process's Slack inbox (HTTP and Socket Mode share it), dispatching to a bolt app of its own: the same
    listeners, run to their end before bolt returns (so the inbox knows when intake has an event), and no signature
    check — the web process checked it before the event went into the inbox, and a redelivered entry may be older
    than bolt's 5-minute window."""
    inbox_app = _bolt(adapter, signing_secret="", process_before_response=True, request_verification_enabled=False)
    return SlackInbox(adapter.rt.redis, inbox_app.async_dispatch, adapter.rt.intake)


def _bolt(adapter: SlackAdapter, *, signing_secret: str, process_before_response: bool,
          request_verification_enabled: bool = True) -> AsyncApp:
    app = AsyncApp(  # the bot token comes with the client
        signing_secret=signing_secret,
        client=adapter.client,
        process_before_response=process_before_response,
        request_verification_enabled=request_verification_enabled,
        ignoring_self_events_enabled=True,
        logger=logging.getLogger("bot.slack.bolt"),
        raise_error_for_unhandled_request=True,  # → on_error, which acknowledges unhandled events
    )
    app.error(on_error)
    listeners.register(app, adapter)
    actions.register(app, adapter)
    commands.register(app, adapter)
    learned.register(app, adapter)
    return app


async def on_error(error: Exception, body: dict[str, Any]) -> BoltResponse | None:
    """bolt's error handler: an unhandled event → 200 (ignored); anything else keeps bolt's response (404 for
    other unhandled requests, 500 for a middleware or listener that raised) and is logged."""
    if isinstance(error, BoltUnhandledRequestError):
        if body.get("type") == "event_callback":
            event = body.get("event")
            log.debug("slack.event_ignored", event_type=event.get("type") if isinstance(event, dict) else None)
            return BoltResponse(status=200, body="")
        log.warning("slack.unhandled_request", type=body.get("type"), command=body.get("command"))
        return None
    if isinstance(error, RecordLater):  # expected while the database is away: the inbox tries again
        log.warning("slack.record_later")
        return None
    log.error("slack.request_failed", error=repr(error), exc_info=error)
    return None
