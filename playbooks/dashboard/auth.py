"""Who may open the dashboard: the holder of ``DESKMATE_DASHBOARD_TOKEN``, or a user a trusted SSO proxy names.

- ``Authorization: Bearer <token>`` (scripts, the JSON endpoints);
- ``/dashboard?token=<token>`` once in a browser: sets an HttpOnly, SameSite=Strict cookie holding an HMAC of
  the token (never the token itself) and redirects to the URL without it, so it stays out of history and logs;
- ``DESKMATE_DASHBOARD_SSO_HEADER`` (e.g. ``X-Forwarded-Email``): when set, that header's value is the signed-in
  user. Set it only behind a proxy that authenticates users and strips the header from clients' requests.

Forms (kill-switch, rollback) use a double-submit CSRF token: a random cookie the page copies into a hidden
field, checked on POST — so it works across many web processes without a shared secret. Requests
authenticated by a Bearer header need none (a browser never sends that header cross-site).
"""

from __future__ import annotations

import hashlib
import hmac
import json as _json
import secrets
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from bot.core.settings import Settings

SESSION_COOKIE = "deskmate_dashboard"
CSRF_COOKIE = "deskmate_csrf"
COOKIE_PATH = "/dashboard"


@dataclass(frozen=True)
class Viewer:
    user_id: str
    method: Literal["token", "sso"]
    via_header: bool = False  # Bearer header: no cookie involved, no CSRF token needed

    @property
    def label(self) -> str:
        return "dashboard token holder" if self.method == "token" else self.user_id


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"deskmate-dashboard-session", hashlib.sha256).hexdigest()


def configured(settings: Settings) -> bool:
    return bool(settings.dashboard_token or settings.dashboard_sso_header)


def authenticate(request: web.Request, settings: Settings) -> Viewer | None:
    if settings.dashboard_sso_header:
        user = request.headers.get(settings.dashboard_sso_header, "").strip()
        if user:
            return Viewer(user_id=user[:200], method="sso")
    token = settings.dashboard_token
    if token:
        given = request.headers.get("Authorization", "")
        if given.startswith("Bearer ") and _same(given[7:].strip(), token):
            return Viewer(user_id="token", method="token", via_header=True)
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if cookie and _same(cookie, session_value(token)):
            return Viewer(user_id="token", method="token")
    return None


def query_token_ok(request: web.Request, settings: Settings) -> bool | None:
    """None: no ``?token=``; True/False: it was given and is right / wrong."""
    given = request.query.get("token")
    if given is None:
        return None
    return bool(settings.dashboard_token) and _same(given, settings.dashboard_token or "")


def set_session(response: web.StreamResponse, request: web.Request, settings: Settings) -> None:
    response.set_cookie(SESSION_COOKIE, session_value(settings.dashboard_token or ""), path=COOKIE_PATH,
                        httponly=True, samesite="Strict", secure=request.secure, max_age=12 * 3600)


def csrf_token(request: web.Request) -> tuple[str, bool]:
    """The CSRF token for this browser, and whether it is new (then the response must set the cookie)."""
    existing = request.cookies.get(CSRF_COOKIE, "")
    if len(existing) >= 32:
        return existing, False
    return secrets.token_urlsafe(32), True


def set_csrf(response: web.StreamResponse, request: web.Request, value: str) -> None:
    response.set_cookie(CSRF_COOKIE, value, path=COOKIE_PATH, httponly=True, samesite="Strict",
                        secure=request.secure)


def csrf_ok(request: web.Request, viewer: Viewer, submitted: str | None) -> bool:
    if viewer.via_header:
        return True
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return bool(cookie and submitted) and _same(cookie, submitted or "")


def unauthorized(settings: Settings, *, json: bool) -> web.HTTPUnauthorized:
    """The 401 to raise (JSON for the API, a short page for a browser)."""
    why = ("the dashboard needs a token (Authorization: Bearer …, or open /dashboard?token=…)"
           + (" or a signed-in user" if settings.dashboard_sso_header else "")
           if configured(settings) else
           "the dashboard is off: set DESKMATE_DASHBOARD_TOKEN or DESKMATE_DASHBOARD_SSO_HEADER")
    headers = {"WWW-Authenticate": 'Bearer realm="deskmate-dashboard"', "Cache-Control": "no-store"}
    if json:
        return web.HTTPUnauthorized(text=_json.dumps({"error": "unauthorized", "detail": why}), headers=headers,
                                    content_type="application/json")
    return web.HTTPUnauthorized(headers=headers, content_type="text/html",
                                text=f"<!doctype html><title>Deskmate dashboard</title><h1>401 Unauthorized</h1><p>{why}</p>")
