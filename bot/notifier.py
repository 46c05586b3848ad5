"""The bot's :class:`playbooks.notify.Notifier`: alerts posted to the admins' Slack channel.

``DESKMATE_ADMIN_CHANNEL`` names the channel and ``DESKMATE_SLACK_BOT_TOKEN`` posts there; without both, alerts
are stored and logged only (``notify`` returns False).
"""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient

from bot.core.log import get_logger
from bot.core.settings import Settings

log = get_logger(__name__)


def escape_control(text: str) -> str:
    """Alert text as Slack shows it literally: ``&``, ``<`` and ``>`` escaped, so a value inside an alert (a
    release name, an exception message) can never become a ``<!channel>`` or a mention. Alerts carry no links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class AdminChannelNotifier:
    """Posts to ``admin_channel`` with ``chat.postMessage`` (mrkdwn, no unfurls)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def notify(self, text: str) -> bool:
        """True when Slack accepted the message; False when not configured or it failed (never raises)."""
        settings = self.settings
        if not (settings.admin_channel and settings.slack_bot_token):
            return False
        client = AsyncWebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url, timeout=10)
        try:
            response = await client.chat_postMessage(channel=settings.admin_channel, text=escape_control(text),
                                                     unfurl_links=False, mrkdwn=True)
            return bool(response.get("ok"))
        except Exception as exc:  # noqa: BLE001 - the alert is stored and logged even when Slack is down
            log.error("alerts.post_failed", channel=settings.admin_channel, error=str(exc))
            return False
