"""Alerts to the admins: stored in the ``alert`` table, logged, and posted to Slack's admin channel if configured.

The table is also the cool-down: an alert of a kind raised within the cool-down is not raised again. A short
Redis lock makes two workers crossing a threshold at the same moment send one alert, not two.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlmodel import col, select

from bot.core.log import get_logger
from feedback.models import Alert
from playbooks.status import utc_now

if TYPE_CHECKING:
    from bot.core.settings import Settings
    from bot.runtime import Runtime

log = get_logger(__name__)

LOCK_PREFIX = "deskmate:alert-lock:"


async def last_alert(rt: Runtime, kind: str, since: datetime) -> Alert | None:
    async with rt.db.asession() as session:
        stmt = (select(Alert).where(Alert.kind == kind, col(Alert.at) >= since)
                .order_by(col(Alert.id).desc()).limit(1))
        return (await session.exec(stmt)).first()


async def raise_alert(rt: Runtime, kind: str, message: str, *, quiet_since: datetime | None = None) -> Alert | None:
    """Store, log and post an alert unless one of ``kind`` was raised since ``quiet_since``.

    ``quiet_since`` defaults to now minus ``alert_cooldown_minutes``. Returns the stored alert, or None when
    it was suppressed.
    """
    now = utc_now()
    cooldown = timedelta(minutes=rt.settings.alert_cooldown_minutes)
    quiet_since = quiet_since or now - cooldown
    if await last_alert(rt, kind, quiet_since) is not None:
        return None
    lock_s = max(1, int((now - quiet_since).total_seconds()))
    try:
        if not await rt.redis.set(f"{LOCK_PREFIX}{kind}", now.isoformat(), nx=True, ex=lock_s):
            return None  # another process is raising the same alert right now
    except Exception:  # noqa: BLE001 - no Redis: the table alone dedupes (a rare double alert is acceptable)
        log.warning("alerts.lock_unavailable", kind=kind)
    async with rt.db.asession() as session:
        alert = Alert(kind=kind, message=message, at=now)
        session.add(alert)
        await session.commit()
        await session.refresh(alert)
    log.warning("alert", kind=kind, message=message)
    if await post_to_admin_channel(rt.settings, message):
        async with rt.db.asession() as session:
            row = await session.get(Alert, alert.id)
            if row is not None:
                row.delivered = True
                session.add(row)
                await session.commit()
                alert = row
    return alert


async def post_to_admin_channel(settings: Settings, text: str) -> bool:
    """Post ``text`` to ``admin_channel`` with ``chat.postMessage``; False when not configured or it failed."""
    if not (settings.admin_channel and settings.slack_bot_token):
        return False
    from slack_sdk.web.async_client import AsyncWebClient

    client = AsyncWebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url, timeout=10)
    try:
        response = await client.chat_postMessage(channel=settings.admin_channel, text=text, unfurl_links=False,
                                                 mrkdwn=True)
        return bool(response.get("ok"))
    except Exception as exc:  # noqa: BLE001 - the alert is stored and logged even when Slack is down
        log.error("alerts.post_failed", channel=settings.admin_channel, error=str(exc))
        return False


async def recent_alerts(rt: Runtime, limit: int = 20) -> list[Alert]:
    async with rt.db.asession() as session:
        return list((await session.exec(select(Alert).order_by(col(Alert.id).desc()).limit(limit))).all())
