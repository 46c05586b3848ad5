"""Slack on the web process: ``POST /slack/events`` (Events API, interactivity and the slash command share
it), and Socket Mode alongside when an app token is set.

The route exists only when a bot token and a signing secret are configured. Events that come over Socket Mode go
through the same inbox (:mod:`bot.slack.socket_mode`). An event (an ``event_callback``
body) whose ``X-Slack-Signature`` is valid (HMAC-SHA256 of ``v0:{timestamp}:{body}``, 5-minute window) is put in
the inbox (:mod:`bot.slack.inbox`) and acknowledged at once. Every other request, and every event while Redis
cannot take it, goes to bolt, which checks the signature and rejects a forged or stale one with a 401 before any
listener. So a forged request never reaches the database or the queue.

Before bolt sees a request, :func:`bolt_request` turns away what bolt would answer with a 500 (which Slack retries):
a body that is not UTF-8 or not a JSON object (raw, or as the ``payload`` field of a form) gets 401 when its
signature is not valid and 400 when it is (Slack sent something we cannot read); a non-numeric
``X-Slack-Request-Timestamp`` or a non-ASCII ``X-Slack-Signature`` gets 401. Event types without a listener are acknowledged (200) by
:mod:`bot.slack.app`, not refused with bolt's 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator

import orjson
from aiohttp import web
from multidict import CIMultiDictProxy
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest

from bot import metrics
from bot.core.log import get_logger
from bot.runtime import Runtime
from bot.slack.app import build_app, build_inbox, configured
from bot.slack.client import close_session, ensure_session
from bot.slack.inbox import figures as inbox_figures
from bot.slack.socket_mode import SocketMode

log = get_logger(__name__)

EVENTS_PATH = "/slack/events"
BOLT_APP = web.AppKey("slack_bolt_app", AsyncApp)
TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
SIGNATURE_HEADER = "X-Slack-Signature"
SIGNATURE_WINDOW_S = 60 * 5  # bolt's (slack_sdk's SignatureVerifier)


def _error(status: int, error: str) -> web.Response:
    return web.json_response({"error": error}, status=status)


def _numeric(timestamp: str) -> bool:
    """Slack's timestamp is whole seconds in ASCII digits (``int()`` alone would also take " 17", "1_7", "١٧")."""
    return timestamp.isascii() and timestamp.isdigit()


def signed(raw: bytes, headers: CIMultiDictProxy[str], secret: str) -> bool:
    """Is ``raw`` signed with ``secret``? The check bolt makes (v0 HMAC-SHA256 of ``v0:{timestamp}:{body}``,
    5-minute window), over the raw bytes: slack_sdk's verifier decodes the body first, and raises on bytes that
    are not UTF-8. Never raises."""
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    signature = headers.get(SIGNATURE_HEADER, "")
    if not (_numeric(timestamp) and signature.isascii()):  # hmac.compare_digest raises on a non-ASCII str
        return False
    if abs(time.time() - int(timestamp)) > SIGNATURE_WINDOW_S:
        return False
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"v0={digest}", signature)


def inbox_event(raw: bytes) -> bool:
    """Is ``raw`` an ``event_callback`` body, one bolt reads as it is read here? The door's own check, for the
    inbox's events only: orjson's parse and bolt's own reading of the body's fields (``build_async_context``, where
    a field of the wrong type raises) take ~11 µs, where bolt's whole request (:func:`bolt_request`) takes ~33.
    Whatever this does not take — JSON only Python's parser reads (``NaN``, lone surrogates), a body not starting
    with ``{`` (bolt then looks at the content type) — goes through :func:`bolt_request` as before. Never raises."""
    if not raw.startswith(b"{"):
        return False
    try:
        body = orjson.loads(raw)
        if not isinstance(body, dict) or body.get("type") != "event_callback":
            return False
        build_async_context(AsyncBoltContext({}), body)
    except Exception:  # noqa: BLE001 - whatever bolt raises on fields it cannot read: bolt_request answers it
        return False
    return True


def bolt_request(raw: bytes, query: str, headers: CIMultiDictProxy[str],
                 secret: str) -> AsyncBoltRequest | web.Response:
    """The request for bolt, or the answer to one bolt cannot take (see the module docstring)."""
    timestamp, signature = headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER)
    if (timestamp is not None and not _numeric(timestamp)) or (signature is not None and not signature.isascii()):
        return _error(401, "invalid request")  # bolt's own check would raise on either (a 500)
    try:
        text = raw.decode("utf-8")
        # bolt parses the body in the constructor: bad JSON raises ValueError, a JSON array or a field of an
        # unexpected type (``"team": 5``) raises while bolt builds its context from the body
        request = AsyncBoltRequest(body=text, query=query, headers=headers)  # type: ignore[arg-type]
        if not isinstance(request.body, dict):
            raise ValueError(f"a JSON {type(request.body).__name__}, not an object")
    except Exception as exc:  # noqa: BLE001 - whatever bolt raises on a body it cannot read
        if signed(raw, headers, secret):
            log.warning("slack.unreadable_body", bytes=len(raw), content_type=headers.get("Content-Type"),
                        error=repr(exc)[:200])
            return _error(400, "unreadable body")
        return _error(401, "invalid request")
    return request


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
    # events over HTTP and over Socket Mode alike are acknowledged once in the inbox
    inbox = build_inbox(adapter)
    metrics.add_surface_figures(app, inbox_figures)  # its backlog in /metrics

    if settings.slack_signing_secret:
        secret = settings.slack_signing_secret

        async def slack_events(request: web.Request) -> web.Response:
            raw = await request.read()
            if inbox_event(raw) and signed(raw, request.headers, secret) and await inbox.accept(raw, request.headers):
                return web.Response(status=200)
            read = bolt_request(raw, request.query_string, request.headers, secret)
            if isinstance(read, web.Response):
                return read
            return await to_aiohttp_response(await bolt.async_dispatch(read))

        app.router.add_post(EVENTS_PATH, slack_events)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        ensure_session(adapter.client)
        socket: SocketMode | None = None
        if settings.slack_app_token:
            socket = SocketMode(bolt, settings, inbox=inbox)
            socket.start_in_background()
        inbox.start()
        log.info("slack.ready", http=bool(settings.slack_signing_secret), socket_mode=socket is not None)
        yield
        if socket is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(socket.close(), 5)
        await inbox.close()
        await adapter.drain()
        await close_session(adapter.client)

    app.cleanup_ctx.append(lifecycle)
