"""The local chat page (``/chat``) and its small JSON API, for trying Deskmate with no Slack or Teams account.

Questions go through the same path as Slack's and Teams': :meth:`bot.intake.Intake.submit` records and enqueues
them, the worker answers. The page follows the answer as the worker writes it (Server-Sent Events:
``…/stream``, fed by :mod:`bot.local_chat.live`), then shows the recorded answer, its numbered sources and 👍/👎 (recorded and scored through :class:`feedback.votes.Votes`). Its status texts come from
:mod:`bot.status_text`, filled into the page when it is served.

A development convenience unless an operator turns it on in production (``DESKMATE_LOCAL_CHAT``); then it needs
a signed-in user and cites public sources only unless ``DESKMATE_LOCAL_CHAT_SOURCES=all``. Each conversation has
a token the server issues; a caller reads and votes only on its own conversation's questions
(:mod:`bot.local_chat.access`).

API (JSON bodies, ``Content-Type: application/json``)::

    POST /chat/api/ask                {"text": …}                      → 202 {"interaction_id", "conversation", "queued"}
    GET  /chat/api/interactions/<id>                                   → 200 the answer (bot.local_chat.answers)
    GET  /chat/api/interactions/<id>/stream                            → 200 text/event-stream: ``status`` and
         ``text`` events ({"text": …}) while the answer is written, then ``answer`` (the same JSON as above);
         ``timeout`` if none came in time. Same header and checks as the GET above (the page reads it with fetch)
    POST /chat/api/feedback           {"interaction_id", "label", "reason"?, "comment"?} → 200 {"ok", "changed"}
    GET  /chat/api/reasons                                             → 200 the 👎 reasons

Every call but the first ``ask`` sends the conversation's token in ``X-Deskmate-Conversation``.
"""

from __future__ import annotations

import html
import json
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.core.log import get_logger
from bot.core.types import Platform, Question
from bot.intake import Outcome, QuestionRejected, clean_question, record_failed_reply_for
from bot.local_chat import access
from bot.local_chat.access import CONVERSATION_HEADER, Caller
from bot.local_chat.answers import interaction_view, local_channel
from bot.local_chat.live import follow
from bot.runtime import Runtime
from bot.status_text import PLACEHOLDER, VOTE_DOWN_THANKS, VOTE_UP_THANKS
from bot.web import runtime_of
from feedback.votes import DOWN_REASONS, VoteError
from playbooks.dashboard import auth

log = get_logger(__name__)

PAGE = Path(__file__).with_name("page.html")
#: The page's ``{{TEXTS}}``: the status wording its script shows before the server has answered.
PAGE_TEXTS = {"placeholder": PLACEHOLDER.text, "thanks_up": VOTE_UP_THANKS, "thanks_down": VOTE_DOWN_THANKS}
NO_STORE = {"Cache-Control": "no-store"}


def local_question(text: str, conversation_id: str, user: str = "local-user", channel_type: str = "im") -> Question:
    return Question(idempotency_key=f"local:{uuid.uuid4().hex}", platform=Platform.LOCAL, workspace="local",
                    channel=local_channel(conversation_id), thread=conversation_id, user=user, text=text,
                    channel_type=channel_type)


def render_page() -> str:
    texts = json.dumps(PAGE_TEXTS, ensure_ascii=False).replace("<", "\\u003c")
    return PAGE.read_text(encoding="utf-8").replace("{{TEXTS}}", texts)


def _error(status: type[web.HTTPException], message: str, **extra: Any) -> web.HTTPException:
    return status(text=json.dumps({"error": message, **extra}), content_type="application/json", headers=NO_STORE)


def _unauthorized(request: web.Request, *, page: bool) -> web.HTTPUnauthorized:
    why = access.why_sign_in(runtime_of(request).settings)
    headers = {"WWW-Authenticate": 'Bearer realm="deskmate-chat"', **NO_STORE}
    if page:
        return web.HTTPUnauthorized(headers=headers, content_type="text/html", text="<!doctype html><title>Deskmate"
                                    f"</title><h1>401 Unauthorized</h1><p>{html.escape(why)}</p>")
    return web.HTTPUnauthorized(text=json.dumps({"error": "unauthorized", "detail": why}), headers=headers,
                                content_type="application/json")


def _caller(request: web.Request, *, page: bool = False) -> Caller:
    """The caller, or a 401 when production needs a sign-in and there is none."""
    who = access.caller(request, runtime_of(request).settings)
    if who is None:
        raise _unauthorized(request, page=page)
    return who


def _conversation(request: web.Request, who: Caller) -> str:
    """The conversation of the token the request presents; 403 without a valid one."""
    token = request.headers.get(CONVERSATION_HEADER, "")
    conversation = access.conversation_of(token, runtime_of(request).settings, who) if token else None
    if conversation is None:
        raise _error(web.HTTPForbidden, "unknown conversation: start a new one (reload the page)")
    return conversation


async def to_chat(_request: web.Request) -> web.Response:
    raise web.HTTPFound("/chat")


async def page(request: web.Request) -> web.Response:
    settings = runtime_of(request).settings
    if access.sign_in_required(settings):
        token_ok = auth.query_token_ok(request, settings)
        if token_ok:  # /chat?token=…: a cookie instead, and the URL without the token
            found = web.HTTPFound("/chat", headers=NO_STORE)
            name, value = access.session_cookie(settings)
            found.set_cookie(name, value, path=access.COOKIE_PATH, httponly=True, samesite="Strict",
                             secure=request.secure, max_age=access.SESSION_MAX_AGE_S)
            raise found
        if token_ok is False:
            raise _unauthorized(request, page=True)
        _caller(request, page=True)
    return web.Response(text=render_page(), content_type="text/html", headers=NO_STORE)


async def _json(request: web.Request) -> dict[str, Any]:
    # JSON only: a cross-site form cannot send it without a CORS preflight, which this API never allows
    if request.content_type != "application/json":
        raise _error(web.HTTPUnsupportedMediaType, "send JSON (Content-Type: application/json)")
    try:
        body = await request.json()
    except ValueError as exc:
        raise _error(web.HTTPBadRequest, "the request body must be JSON") from exc
    if not isinstance(body, dict):
        raise _error(web.HTTPBadRequest, "the request body must be a JSON object")
    return body


async def ask(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    who = _caller(request)
    if request.headers.get(CONVERSATION_HEADER):
        conversation = _conversation(request, who)
        token = request.headers[CONVERSATION_HEADER].strip()
    else:
        conversation, token = access.issue(rt.settings, who)
    body = await _json(request)
    try:
        text = clean_question(str(body.get("text") or ""), rt.settings)
    except QuestionRejected as exc:
        return web.json_response({"error": exc.reply, "reason": exc.reason},
                                 status=413 if exc.reason == "too_long" else 400)
    question = local_question(text, conversation, user=who.user(conversation),
                              channel_type=access.channel_type(rt.settings))
    submitted = await rt.intake.submit(question)
    if submitted.outcome is Outcome.UNRECORDED or submitted.interaction_id is None:
        return web.json_response({"error": await record_failed_reply_for(question)}, status=503)
    return web.json_response({"interaction_id": submitted.interaction_id, "conversation": token,
                              "queued": submitted.enqueued}, status=202, headers=NO_STORE)


def _interaction_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError as exc:
        raise web.HTTPNotFound() from exc


async def get_interaction(request: web.Request) -> web.Response:
    who = _caller(request)
    conversation = _conversation(request, who)
    interaction_id = _interaction_id(request)
    view = await interaction_view(runtime_of(request).interactions, interaction_id, conversation=conversation)
    if view is None:
        return web.json_response({"error": "no such question"}, status=404, headers=NO_STORE)
    return web.json_response(view, headers=NO_STORE)


#: How long one ``…/stream`` request follows an answer before it says ``timeout`` (the page then polls).
STREAM_TIMEOUT_S = 180.0


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def stream_interaction(request: web.Request) -> web.StreamResponse:
    """The answer as it is written (Server-Sent Events), then the recorded answer."""
    rt = runtime_of(request)
    who = _caller(request)
    conversation = _conversation(request, who)
    interaction_id = _interaction_id(request)
    view = await interaction_view(rt.interactions, interaction_id, conversation=conversation)
    row = await rt.interactions.get(interaction_id) if view is not None else None
    if view is None or row is None:
        return web.json_response({"error": "no such question"}, status=404, headers=NO_STORE)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no",
                                           **NO_STORE})
    await response.prepare(request)
    if view["status"] == "pending":
        async for event in follow(rt.redis, row.idempotency_key, timeout_s=STREAM_TIMEOUT_S):
            if event is not None and event.kind in ("status", "text"):
                await response.write(_sse(event.kind, {"text": event.text}))
                continue
            view = await interaction_view(rt.interactions, interaction_id, conversation=conversation)
            if view is None or view["status"] != "pending":
                break  # the end, or a quiet second in which the answer was recorded (e.g. by another worker)
    if view is None or view["status"] == "pending":
        await response.write(_sse("timeout", {"interaction_id": interaction_id}))
    else:
        await response.write(_sse("answer", view))
    await response.write_eof()
    return response


async def feedback(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    who = _caller(request)
    conversation = _conversation(request, who)
    body = await _json(request)
    try:
        interaction_id = int(body.get("interaction_id", 0))
    except (TypeError, ValueError):
        return web.json_response({"error": "interaction_id must be a number"}, status=400)
    if await interaction_view(rt.interactions, interaction_id, conversation=conversation) is None:
        return web.json_response({"error": "no such question"}, status=404)
    try:
        result = await rt.votes.vote(interaction_id=interaction_id, user=who.user(conversation),
                                     platform=Platform.LOCAL.value, label=str(body.get("label")),
                                     reason=body.get("reason") or None, comment=body.get("comment") or None)
    except (VoteError, ValueError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"ok": True, "changed": result.changed})


async def reasons(request: web.Request) -> web.Response:
    _caller(request)
    return web.json_response(DOWN_REASONS)


def setup(app: web.Application, rt: Runtime) -> None:
    settings = rt.settings
    if not access.enabled(settings):
        log.info("local_chat.off", setting=settings.local_chat, environment=settings.environment)
        return
    sign_in = access.sign_in_required(settings)
    if sign_in and not auth.configured(settings):
        log.warning("local_chat.no_sign_in", hint=access.why_sign_in(settings))
    app.router.add_get("/", to_chat)
    app.router.add_get("/chat", page)
    app.router.add_post("/chat/api/ask", ask)
    app.router.add_get("/chat/api/interactions/{id}", get_interaction)
    app.router.add_get("/chat/api/interactions/{id}/stream", stream_interaction)
    app.router.add_post("/chat/api/feedback", feedback)
    app.router.add_get("/chat/api/reasons", reasons)
    log.info("local_chat.on", sign_in=sign_in,
             sources="public" if access.public_sources_only(settings) else "all")
