"""Who may use the local chat page's API, which sources it may cite, and whose conversation an interaction is.

- **Mounted or not** (``DESKMATE_LOCAL_CHAT``): ``auto`` = on in development, off in production; ``off`` = no
  routes at all (404). The terminal chat (``deskmate chat``) is a process with the database's credentials and
  does not go through any of this.
- **Sign-in** (production only): the dashboard's mechanism, :mod:`playbooks.dashboard.auth` — the user a trusted
  SSO proxy names (``DESKMATE_DASHBOARD_SSO_HEADER``), or the holder of ``DESKMATE_DASHBOARD_TOKEN``
  (``Authorization: Bearer …``, or ``/chat?token=…`` once in a browser: an HttpOnly, SameSite=Strict cookie on
  ``/chat`` holding the dashboard's HMAC of the token, never the token). In development nobody signs in.
- **Sources** (``DESKMATE_LOCAL_CHAT_SOURCES``): ``public`` = asked as in a public channel (``visibility:
  restricted`` documents are never cited), ``all`` = as in a DM; ``auto`` = all in development, public in
  production.
- **Conversations**: the server issues every conversation a token ``<id>.<signature>`` — ``id`` is
  ``secrets.token_urlsafe(24)``, the signature an HMAC-SHA256 of the id and the caller (the signed-in user; no
  one in development) under a key derived from ``DESKMATE_USER_HASH_SALT``. Questions are recorded in channel
  ``local:<id>``; the caller presents the token in the ``X-Deskmate-Conversation`` header and reads and votes
  only on local interactions of that channel. Knowing a channel id (the database, the dashboard) is not enough
  to read it, and a token is worthless to another signed-in user.
- **Votes** are recorded under the signed-in user, or in development under the conversation — never a name the
  client sends.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from aiohttp import web

from bot.core.settings import Settings
from playbooks.dashboard import auth

CONVERSATION_HEADER = "X-Deskmate-Conversation"
#: Where the browser's sign-in cookie is sent: the page and its API.
COOKIE_PATH = "/chat"
SESSION_MAX_AGE_S = 12 * 3600
_ID = re.compile(r"^[A-Za-z0-9_-]{32}$")  # secrets.token_urlsafe(24)


def enabled(settings: Settings) -> bool:
    """Are the page and its API mounted?"""
    if settings.local_chat == "auto":
        return settings.environment == "development"
    return settings.local_chat == "on"


def sign_in_required(settings: Settings) -> bool:
    return settings.environment == "production"


def public_sources_only(settings: Settings) -> bool:
    if settings.local_chat_sources == "auto":
        return settings.environment == "production"
    return settings.local_chat_sources == "public"


def channel_type(settings: Settings) -> str:
    """The channel type a local question is asked as: the source policy of a public channel, or of a DM."""
    return "public" if public_sources_only(settings) else "im"


@dataclass(frozen=True)
class Caller:
    """Who is calling: ``identity`` is the signed-in user (``sso:alice@example.com``, ``token:token``), or
    ``""`` in development, where nobody signs in."""

    identity: str

    def user(self, conversation: str) -> str:
        """The user questions and votes are recorded under (pseudonymised by ``hash_user`` like every user id)."""
        return self.identity or f"local-conversation:{conversation}"


def caller(request: web.Request, settings: Settings) -> Caller | None:
    """The caller, or None when a sign-in is required and there is none."""
    if not sign_in_required(settings):
        return Caller("")
    viewer = auth.authenticate(request, settings)
    if viewer is None:
        return None
    return Caller(f"{viewer.method}:{viewer.user_id}")


def _key(settings: Settings) -> bytes:
    return hmac.new(settings.user_hash_salt.encode(), b"deskmate-local-chat-conversation", hashlib.sha256).digest()


def _signature(settings: Settings, conversation: str, who: Caller) -> str:
    mac = hmac.new(_key(settings), f"{conversation}\n{who.identity}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:18]).decode()


def issue(settings: Settings, who: Caller) -> tuple[str, str]:
    """A new conversation: its id (the channel's) and the token its caller presents."""
    conversation = secrets.token_urlsafe(24)
    return conversation, f"{conversation}.{_signature(settings, conversation, who)}"


def conversation_of(token: str, settings: Settings, who: Caller) -> str | None:
    """The conversation id of a token this server issued to ``who``; None for anything else."""
    conversation, _, signature = token.strip().partition(".")
    if not _ID.match(conversation) or not signature:
        return None
    if not hmac.compare_digest(signature.encode(), _signature(settings, conversation, who).encode()):
        return None
    return conversation


def session_cookie(settings: Settings) -> tuple[str, str]:
    """The browser's sign-in cookie after ``/chat?token=…``: the dashboard's, on :data:`COOKIE_PATH`."""
    return auth.SESSION_COOKIE, auth.session_value(settings.dashboard_token or "")


def why_sign_in(settings: Settings) -> str:
    if not auth.configured(settings):
        return ("the local chat needs a signed-in user in production, and no sign-in is configured: set "
                "DESKMATE_DASHBOARD_SSO_HEADER or DESKMATE_DASHBOARD_TOKEN (or DESKMATE_LOCAL_CHAT=off)")
    ways = ["open /chat?token=… or send Authorization: Bearer …"] if settings.dashboard_token else []
    if settings.dashboard_sso_header:
        ways.insert(0, "sign in through the company's single sign-on")
    return "the local chat needs a signed-in user: " + " or ".join(ways)
