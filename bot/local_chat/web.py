"""The local chat page (``/chat``) and its small JSON API, for trying Deskmate with no Slack or Teams account.

Questions go through the same path as Slack's and Teams': :meth:`bot.intake.Intake.submit` records and enqueues
them, the worker answers. The page polls the interaction until it is final, then shows the answer, its numbered
sources and 👍/👎 (recorded and scored through :class:`feedback.votes.Votes`). Its status texts come from
:mod:`bot.status_text`, filled into the page when it is served.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.core.types import Platform, Question
from bot.intake import RECORD_FAILED_REPLY, Outcome, QuestionRejected, clean_question
from bot.local_chat.answers import interaction_view
from bot.runtime import Runtime
from bot.status_text import PLACEHOLDER, VOTE_DOWN_THANKS, VOTE_UP_THANKS
from bot.web import runtime_of
from feedback.votes import DOWN_REASONS, VoteError

PAGE = Path(__file__).with_name("page.html")
#: The page's ``{{TEXTS}}``: the status wording its script shows before the server has answered.
PAGE_TEXTS = {"placeholder": PLACEHOLDER.text, "thanks_up": VOTE_UP_THANKS, "thanks_down": VOTE_DOWN_THANKS}


def local_question(text: str, conversation_id: str, user: str = "local-user") -> Question:
    return Question(idempotency_key=f"local:{uuid.uuid4().hex}", platform=Platform.LOCAL, workspace="local",
                    channel=f"local:{conversation_id}", thread=conversation_id, user=user, text=text,
                    channel_type="im")


def render_page() -> str:
    texts = json.dumps(PAGE_TEXTS, ensure_ascii=False).replace("<", "\\u003c")
    return PAGE.read_text(encoding="utf-8").replace("{{TEXTS}}", texts)


async def to_chat(_request: web.Request) -> web.Response:
    raise web.HTTPFound("/chat")


async def page(_request: web.Request) -> web.Response:
    return web.Response(text=render_page(), content_type="text/html", headers={"Cache-Control": "no-store"})


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(text='{"error": "the request body must be JSON"}',
                                 content_type="application/json") from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "the request body must be a JSON object"}',
                                 content_type="application/json")
    return body


async def ask(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    body = await _json(request)
    try:
        text = clean_question(str(body.get("text") or ""), rt.settings)
    except QuestionRejected as exc:
        return web.json_response({"error": exc.reply, "reason": exc.reason},
                                 status=413 if exc.reason == "too_long" else 400)
    conversation = str(body.get("conversation_id") or uuid.uuid4().hex)[:64]
    submitted = await rt.intake.submit(local_question(text, conversation))
    if submitted.outcome is Outcome.UNRECORDED or submitted.interaction_id is None:
        return web.json_response({"error": RECORD_FAILED_REPLY}, status=503)
    return web.json_response({"interaction_id": submitted.interaction_id, "conversation_id": conversation,
                              "queued": submitted.enqueued}, status=202)


async def get_interaction(request: web.Request) -> web.Response:
    try:
        interaction_id = int(request.match_info["id"])
    except ValueError as exc:
        raise web.HTTPNotFound() from exc
    view = await interaction_view(runtime_of(request).interactions, interaction_id)
    if view is None:
        return web.json_response({"error": "no such question"}, status=404)
    return web.json_response(view)


async def feedback(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    body = await _json(request)
    try:
        result = await rt.votes.vote(interaction_id=int(body.get("interaction_id", 0)),
                                     user=str(body.get("user") or "local-user"), platform=Platform.LOCAL.value,
                                     label=str(body.get("label")), reason=body.get("reason") or None,
                                     comment=body.get("comment") or None)
    except (VoteError, ValueError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"ok": True, "changed": result.changed})


async def reasons(_request: web.Request) -> web.Response:
    return web.json_response(DOWN_REASONS)


def setup(app: web.Application, rt: Runtime) -> None:
    app.router.add_get("/", to_chat)
    app.router.add_get("/chat", page)
    app.router.add_post("/chat/api/ask", ask)
    app.router.add_get("/chat/api/interactions/{id}", get_interaction)
    app.router.add_post("/chat/api/feedback", feedback)
    app.router.add_get("/chat/api/reasons", reasons)
