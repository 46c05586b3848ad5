"""How alerts reach the admins: a :class:`Notifier`, provided by the bot (``bot.notifier``: the Slack admin channel).

Playbooks decide *that* the admins must be told and *what*; they never hold a chat client themselves.
"""

from __future__ import annotations

from typing import Protocol


class Notifier(Protocol):
    async def notify(self, text: str) -> bool:
        """Tell the admins ``text`` (Slack mrkdwn). True when it was delivered; never raises."""
        ...


class NoNotifier:
    """Delivers nothing: alerts are stored and logged only (no admin channel configured, tests)."""

    async def notify(self, text: str) -> bool:
        return False
