"""The slack-bolt ``AsyncApp`` both transports (HTTP in :mod:`bot.slack.http`, Socket Mode in
:mod:`bot.slack.socket_mode`) dispatch to.

``process_before_response=False``: bolt answers Slack as soon as ``ack()`` is called (events are acked
automatically) and runs the rest of a listener afterwards — the ack never waits for the database, Redis or the
Web API. Request signatures are checked by bolt (``X-Slack-Signature``, 5-minute timestamp window); Socket Mode
needs no signature.
"""

from __future__ import annotations

import logging

from slack_bolt.async_app import AsyncApp

from bot.core.settings import Settings
from bot.runtime import Runtime
from bot.slack import actions, commands, listeners
from bot.slack.adapter import SlackAdapter
from bot.slack.client import web_client
from bot.slack.pacing import pacer_for


def configured(settings: Settings) -> bool:
    """A bot token and a way to receive events (a signing secret for HTTP, an app token for Socket Mode)."""
    return bool(settings.slack_bot_token and (settings.slack_signing_secret or settings.slack_app_token))


def build_app(rt: Runtime) -> tuple[AsyncApp, SlackAdapter]:
    settings = rt.settings
    client = web_client(settings)
    app = AsyncApp(  # the bot token comes with the client
        signing_secret=settings.slack_signing_secret or "",
        client=client,
        process_before_response=False,
        ignoring_self_events_enabled=True,
        logger=logging.getLogger("bot.slack.bolt"),
    )
    adapter = SlackAdapter(rt=rt, client=client, pacer=pacer_for(rt.redis, settings))
    listeners.register(app, adapter)
    actions.register(app, adapter)
    commands.register(app, adapter)
    return app, adapter
