"""Turning what an admin typed into a switch scope or a user: ``<#C123|general>``, ``#general``, ``here``, …

Slack sends ``<#C123|general>`` when the slash command escapes channels, ``#general`` when it does not (then the
name is looked up with ``conversations.list`` if a bot token is set). Teams admins use ``here`` (or a raw
``19:…@thread…`` id). The CLI names a channel with its platform: ``slack:C123``, ``teams:19:…``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.core.log import get_logger
from bot.core.settings import Settings
from playbooks.killswitch import GLOBAL_SCOPE, channel_scope

log = get_logger(__name__)

PLATFORMS = ("slack", "teams", "local")
_SLACK_CHANNEL_REF = re.compile(r"^<#([A-Z0-9]+)(?:\|([^>]*))?>$")
_SLACK_USER_REF = re.compile(r"^<@([A-Z0-9]+)(?:\|([^>]*))?>$")
_SLACK_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")
GLOBAL_WORDS = ("global", "all", "everywhere", "*")
HERE_WORDS = ("here", "<!here>", "<!here|here>", "this", "this-channel")


class TargetError(ValueError):
    """The target cannot be resolved; the message tells the admin how to name it."""


@dataclass(frozen=True)
class Target:
    scope: str  # "global" or "<platform>:<channel>"
    label: str  # for replies: "everywhere", "<#C123>", "teams:19:abc…"

    @property
    def is_global(self) -> bool:
        return self.scope == GLOBAL_SCOPE


def looks_like_target(word: str) -> bool:
    w = word.strip()
    low = w.lower()
    return (low in GLOBAL_WORDS or low in HERE_WORDS or w.startswith("#") or w.startswith("<#")
            or low.split(":", 1)[0] in PLATFORMS and ":" in w or bool(_SLACK_ID.match(w))
            or w.startswith("19:"))


def slack_label(channel: str) -> str:
    return f"<#{channel}>"


def scope_label(scope: str, *, slack_links: bool = False) -> str:
    """How a reply names a scope: ``<#C123>`` renders as a channel link in Slack; elsewhere the raw scope."""
    if scope == GLOBAL_SCOPE:
        return "everywhere"
    platform, _, channel = scope.partition(":")
    return slack_label(channel) if platform == "slack" and slack_links else scope


async def resolve_target(word: str | None, *, platform: str, channel: str, settings: Settings) -> Target:
    """The switch scope ``word`` names, for an admin writing on ``platform`` in ``channel``."""
    if word is None or word.strip().lower() in GLOBAL_WORDS:
        return Target(GLOBAL_SCOPE, "everywhere")
    w = word.strip()
    slack_side = platform in ("slack", "cli")
    if w.lower() in HERE_WORDS:
        if platform == "cli" or not channel:
            raise TargetError("`here` only works in a chat channel; name the channel, e.g. `slack:C0123ABCD`")
        scope = channel_scope(platform, channel)
        return Target(scope, scope_label(scope, slack_links=platform == "slack"))
    if m := _SLACK_CHANNEL_REF.match(w):
        scope = channel_scope("slack", m.group(1))
        return Target(scope, scope_label(scope, slack_links=platform == "slack"))
    prefix, _, rest = w.partition(":")
    if prefix.lower() in PLATFORMS and rest:
        scope = channel_scope(prefix.lower(), rest.lstrip("#"))
        return Target(scope, scope_label(scope, slack_links=platform == "slack"))
    if w.startswith("19:"):
        return Target(channel_scope("teams", w), f"teams:{w}")
    bare = w.lstrip("#")
    if _SLACK_ID.match(bare) and slack_side:
        scope = channel_scope("slack", bare)
        return Target(scope, scope_label(scope, slack_links=platform == "slack"))
    if slack_side and bare:
        found = await lookup_slack_channel(settings, bare)
        if found:
            scope = channel_scope("slack", found)
            return Target(scope, scope_label(scope, slack_links=platform == "slack"))
        raise TargetError(f"I can't find a Slack channel named `#{bare}`: mention it (type `#` and pick it), "
                          "or give its id (`C0123ABCD`), or run the command in that channel with `here`")
    raise TargetError(f"I can't tell which channel `{w}` is: run the command in that channel with `here`, "
                      "or give its id with the platform, e.g. `teams:19:…@thread.tacv2`")


async def lookup_slack_channel(settings: Settings, name: str) -> str | None:
    """A Slack channel id by name via ``conversations.list`` (None when no token or not found)."""
    if not settings.slack_bot_token:
        return None
    client = AsyncWebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url, timeout=5)
    cursor: str | None = None
    try:
        for _ in range(20):  # 20 pages × 1000 channels is plenty; never loop forever
            response = await client.conversations_list(types="public_channel,private_channel", limit=1000,
                                                       exclude_archived=True, cursor=cursor)
            channels: list[dict[str, Any]] = response.get("channels", []) or []
            for ch in channels:
                if ch.get("name") == name.lower() or ch.get("name_normalized") == name.lower():
                    return str(ch["id"])
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return None
    except Exception as exc:  # noqa: BLE001 - an API failure means "not found", with a log line
        log.warning("admin.channel_lookup_failed", name=name, error=str(exc))
    return None


def resolve_user(word: str, *, platform: str) -> tuple[str, str]:
    """(platform, user id) from ``<@U123>``, ``slack:U123``, ``teams:<AAD object id>`` or a bare id on the admin's
    platform (Teams admins are named by their Azure AD object id, as the Teams adapter reports them)."""
    w = word.strip()
    if m := _SLACK_USER_REF.match(w):
        return "slack", m.group(1)
    prefix, _, rest = w.partition(":")
    if prefix.lower() in PLATFORMS and rest:
        return prefix.lower(), rest
    if platform == "cli":
        raise TargetError("name the user with their platform, e.g. `slack:U0123ABCD` or `teams:<AAD object id>`")
    return platform, w.lstrip("@")
