"""The admin dashboard on the web process: ``/dashboard`` (HTML) and ``/dashboard/api/*`` (JSON), same auth.

What it shows is read from the database on each request, so every web process shows the same thing: answers,
👍 and fallback rates per release, latency and cost per day (:mod:`.data`); answers not yet delivered to
Slack/Teams and deliveries given up; knowledge gaps (:mod:`.gaps`); retrieval drift (:mod:`.drift`); releases,
switches, the canary (:func:`playbooks.canary.canary_view`) and the audit log. Its forms — kill-switch, rollback,
canary start/stop —
run the same admin command handler as Slack, Teams and the CLI, as ``dashboard:<user>``, so they are audited.
Learned answers (:mod:`.learned`): escalations, drafts to approve / edit / reject (audited too), approved
answers and their citations; knowledge gaps link to their drafts.

The token holder is an admin by holding the token; an SSO user may change things only if they are an admin
(``DESKMATE_ADMIN_USER_IDS`` lists their id as the SSO header gives it) — others get a refusal, also audited.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from bot.core.log import get_logger
from bot.core.settings import Settings
from feedback.db import Database
from playbooks.admin import AdminActor, AdminContext, AdminReply, handle_admin_command
from playbooks.canary import canary_view
from playbooks.dashboard import auth
from playbooks.dashboard.data import (
    Window,
    audit_view,
    delivery_view,
    overview,
    releases_view,
    sources_view,
    switches_view,
)
from playbooks.dashboard.drift import score_drift
from playbooks.dashboard.gaps import knowledge_gaps
from playbooks.dashboard.learned import learned_view, link_gaps, review
from playbooks.dashboard.page import render
from playbooks.learned import LearnedAnswers

log = get_logger(__name__)


@dataclass(frozen=True)
class DashboardDeps:
    """What the dashboard reads and acts on (the web process builds it: ``bot.web``)."""

    settings: Settings
    db: Database
    redis: Any = None  # arq's ArqRedis: a learned-answer review asks a worker to refresh the index


RT = web.AppKey("dashboard_deps", DashboardDeps)
GAPS_CACHE_S = 60.0
DEFAULT_DAYS = 30
DASHBOARD_PLATFORM = "dashboard"
_gaps_cache: dict[tuple[int, str, int], tuple[float, dict[str, Any]]] = {}


def _days(request: web.Request) -> int:
    try:
        return int(request.query.get("days", DEFAULT_DAYS))
    except ValueError:
        return DEFAULT_DAYS


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def _viewer(request: web.Request, *, json: bool) -> auth.Viewer:
    viewer = auth.authenticate(request, request.app[RT].settings)
    if viewer is None:
        raise auth.unauthorized(request.app[RT].settings, json=json)
    return viewer


async def cached_gaps(rt: DashboardDeps, window: Window) -> dict[str, Any]:
    """Gaps embed every question: computed at most once a minute per window and process."""
    key = (window.days, window.labels[-1], id(rt.db))
    hit = _gaps_cache.get(key)
    if hit and time.monotonic() - hit[0] < GAPS_CACHE_S:
        return hit[1]
    result = await knowledge_gaps(rt.db, rt.settings, window)
    _gaps_cache[key] = (time.monotonic(), result)
    return result


async def page(request: web.Request) -> web.StreamResponse:
    rt = request.app[RT]
    token_given = auth.query_token_ok(request, rt.settings)
    if token_given is not None:
        if not token_given:
            raise auth.unauthorized(rt.settings, json=False)
        query = {k: v for k, v in request.query.items() if k != "token"}
        response = see_other(request.path + (f"?{urlencode(query)}" if query else ""))
        auth.set_session(response, request, rt.settings)
        return response
    viewer = _viewer(request, json=False)
    window = Window.last(_days(request))
    ov, gaps, drift, releases, switches, audit = await asyncio.gather(
        overview(rt.db, rt.settings, window), cached_gaps(rt, window), score_drift(rt.db),
        releases_view(rt.db, rt.settings), switches_view(rt.db), audit_view(rt.db, 50))
    delivery = await delivery_view(rt.db, 50)
    sources = await sources_view(rt.db, rt.settings)
    canary = await canary_view(rt.db, rt.settings)
    gaps = await link_gaps(rt.db, rt.settings, gaps)  # a gap links to the draft made of its question
    learned = await learned_view(rt.db, rt.settings, window)
    csrf, new_csrf = auth.csrf_token(request)
    flash = (request.query["msg"][:2000], request.query.get("ok") == "1") if request.query.get("msg") else None
    html = render(viewer_label=viewer.label, days=window.days, overview=ov, gaps=gaps, drift=drift, releases=releases,
                  switches=switches, audit=audit, csrf=csrf, flash=flash, delivery=delivery, sources=sources,
                  canary=canary, learned=learned)
    response = web.Response(text=html, content_type="text/html",
                            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                     "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                                                "img-src 'self' data:; form-action 'self'"})
    if new_csrf:
        auth.set_csrf(response, request, csrf)
    return response


# --- JSON ----------------------------------------------------------------------------------------------
async def api_overview(request: web.Request) -> web.Response:
    _viewer(request, json=True)
    rt = request.app[RT]
    return web.json_response(await overview(rt.db, rt.settings, Window.last(_days(request))))


async def api_gaps(request: web.Request) -> web.Response:
    _viewer(request, json=True)
    return web.json_response(await cached_gaps(request.app[RT], Window.last(_days(request))))


async def api_drift(request: web.Request) -> web.Response:
    _viewer(request, json=True)
    return web.json_response(await score_drift(request.app[RT].db))


async def api_releases(request: web.Request) -> web.Response:
    _viewer(request, json=True)
    rt = request.app[RT]
    return web.json_response(await releases_view(rt.db, rt.settings))


async def api_switches(request: web.Request) -> web.Response:
    _viewer(request, json=True)
    return web.json_response(await switches_view(request.app[RT].db))


async def api_delivery(request: web.Request) -> web.Response:
    _viewer(request, json=True)
    try:
        limit = int(request.query.get("limit", 50))
    except ValueError:
        limit = 50
    return web.json_response(await delivery_view(request.app[RT].db, limit))


async def api_sources(request: web.Request) -> web.Response:
    _viewer(request, json=True)
    rt = request.app[RT]
    return web.json_response(await sources_view(rt.db, rt.settings))


async def api_canary(request: web.Request) -> web.Response:
    """The latest canary: its definition, each arm's figures with 95 % intervals, the sequential test's verdict
    and the decision (which metric, the figures, the test)."""
    _viewer(request, json=True)
    rt = request.app[RT]
    return web.json_response(await canary_view(rt.db, rt.settings))


async def api_learned(request: web.Request) -> web.Response:
    _viewer(request, json=True)
    rt = request.app[RT]
    return web.json_response(await learned_view(rt.db, rt.settings, Window.last(_days(request))))


async def api_audit(request: web.Request) -> web.Response:
    _viewer(request, json=True)
    try:
        limit = int(request.query.get("limit", 50))
    except ValueError:
        limit = 50
    return web.json_response(await audit_view(request.app[RT].db, limit))


# --- actions -------------------------------------------------------------------------------------------
async def run_command(rt: DashboardDeps, viewer: auth.Viewer, text: str) -> AdminReply:
    """Run an admin command as ``dashboard:<user>`` through the shared handler (so it is audited).

    The token is an admin credential, like shell access for the CLI: its holder is let through the handler's
    admin check for this one call. SSO users must be admins in their own right.
    """
    actor = AdminActor(platform=DASHBOARD_PLATFORM, user_id=viewer.user_id, channel="",
                       display_name=viewer.label if viewer.method == "token" else "")
    settings = rt.settings
    if viewer.method == "token":
        settings = settings.model_copy(update={"admin_user_ids": [*settings.admin_user_ids, viewer.user_id]})
    return await handle_admin_command(AdminContext(settings=settings, db=rt.db), actor, text)


async def _action(request: web.Request, build: Callable[[dict[str, str]], str]) -> web.StreamResponse:
    rt = request.app[RT]
    wants_json = request.content_type == "application/json"
    viewer = _viewer(request, json=wants_json)
    fields: dict[str, Any] = dict(await request.json()) if wants_json else dict(await request.post())
    if not auth.csrf_ok(request, viewer, str(fields.get("csrf") or "")):
        log.warning("dashboard.csrf_refused", user=viewer.user_id)
        return web.json_response({"ok": False, "text": "stale or missing form token: reload the page"}, status=403)
    try:
        command = build({k: str(v).strip() for k, v in fields.items()})
    except ValueError as exc:
        reply_text, ok = str(exc), False
    else:
        reply = await run_command(rt, viewer, command)
        reply_text, ok = reply.text, reply.ok
    if wants_json or viewer.via_header:
        return web.json_response({"ok": ok, "text": reply_text}, status=200 if ok else 400)
    query = {"days": fields.get("days") or DEFAULT_DAYS, "msg": reply_text[:1500], "ok": "1" if ok else "0"}
    return see_other(f"/dashboard?{urlencode(query)}#controls")


def kill_command(fields: dict[str, str]) -> str:
    mode = fields.get("mode", "").lower()
    if mode not in ("on", "off", "retrieval-only"):
        raise ValueError("mode must be on, off or retrieval-only")
    target = fields.get("target") or "everywhere"
    if " " in target:
        raise ValueError("where: one scope, e.g. everywhere or slack:C0123ABCD")
    return " ".join(p for p in ("kill", mode, target, fields.get("reason", "")[:200]) if p)


def rollback_command(fields: dict[str, str]) -> str:
    name = fields.get("release", "")
    if " " in name:
        raise ValueError("a release name has no spaces")
    return f"rollback {name}".strip()


def canary_command(fields: dict[str, str]) -> str:
    """The dashboard's canary form as an admin command: start (release, share, excluded channels, shadow) or stop."""
    if fields.get("action") == "stop":
        return f"canary stop {fields.get('reason', '')[:200]}".strip()
    name = fields.get("release", "")
    if not name or " " in name:
        raise ValueError("choose the candidate release")
    try:
        share = float(fields.get("share") or 10)
    except ValueError as exc:
        raise ValueError("the share is a number (percent of conversations)") from exc
    words = ["canary", name, "--share", f"{share:g}"]
    for channel in (fields.get("exclude") or "").replace(",", " ").split():
        words += ["--exclude", channel]
    if fields.get("shadow") in ("on", "1", "true"):
        words.append("--shadow")
    return " ".join(words)


async def action_canary(request: web.Request) -> web.StreamResponse:
    return await _action(request, canary_command)


async def action_kill(request: web.Request) -> web.StreamResponse:
    return await _action(request, kill_command)


async def action_rollback(request: web.Request) -> web.StreamResponse:
    return await _action(request, rollback_command)


async def action_learned(request: web.Request) -> web.StreamResponse:
    """Approve / edit / reject a learned answer (playbooks/dashboard/learned.py); the token holder as an admin."""
    rt = request.app[RT]
    wants_json = request.content_type == "application/json"
    viewer = _viewer(request, json=wants_json)
    fields: dict[str, Any] = dict(await request.json()) if wants_json else dict(await request.post())
    if not auth.csrf_ok(request, viewer, str(fields.get("csrf") or "")):
        return web.json_response({"ok": False, "text": "stale or missing form token: reload the page"}, status=403)
    settings = rt.settings
    if viewer.method == "token":
        settings = settings.model_copy(update={"admin_user_ids": [*settings.admin_user_ids, viewer.user_id]})
    ok, text = await review(LearnedAnswers(settings, rt.db, rt.redis), reviewer=viewer.user_id,
                            fields={k: str(v) for k, v in fields.items()})
    if wants_json or viewer.via_header:
        return web.json_response({"ok": ok, "text": text}, status=200 if ok else 400)
    query = {"days": fields.get("days") or DEFAULT_DAYS, "msg": text[:1500], "ok": "1" if ok else "0"}
    return see_other(f"/dashboard?{urlencode(query)}#learned")


def setup(app: web.Application, rt: DashboardDeps) -> None:
    """Add the dashboard's routes (``bot.web`` calls it with the web process's settings and database)."""
    app[RT] = rt
    app.router.add_get("/dashboard", page)
    app.router.add_get("/dashboard/api/overview", api_overview)
    app.router.add_get("/dashboard/api/gaps", api_gaps)
    app.router.add_get("/dashboard/api/drift", api_drift)
    app.router.add_get("/dashboard/api/releases", api_releases)
    app.router.add_get("/dashboard/api/switches", api_switches)
    app.router.add_get("/dashboard/api/audit", api_audit)
    app.router.add_get("/dashboard/api/canary", api_canary)
    app.router.add_get("/dashboard/api/delivery", api_delivery)
    app.router.add_get("/dashboard/api/sources", api_sources)
    app.router.add_post("/dashboard/actions/kill", action_kill)
    app.router.add_post("/dashboard/actions/rollback", action_rollback)
    app.router.add_post("/dashboard/actions/canary", action_canary)
    app.router.add_get("/dashboard/api/learned", api_learned)
    app.router.add_post("/dashboard/actions/learned", action_learned)
    if not auth.configured(rt.settings):
        log.info("dashboard.off", hint="set DESKMATE_DASHBOARD_TOKEN or DESKMATE_DASHBOARD_SSO_HEADER")
