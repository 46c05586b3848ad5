"""Alerts to the admins: stored in the ``alert`` table, logged, and sent through the :class:`Notifier`.

The table is also the cool-down: an alert of a kind raised within the cool-down is not raised again. A short
Redis lock makes two workers crossing a threshold at the same moment send one alert, not two.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from redis.asyncio import Redis
from sqlmodel import col, select

from bot.core.log import get_logger
from bot.core.settings import Settings
from feedback.db import Database
from feedback.models import Alert
from playbooks.notify import Notifier
from playbooks.status import utc_now

log = get_logger(__name__)

LOCK_PREFIX = "deskmate:alert-lock:"


async def last_alert(db: Database, kind: str, since: datetime) -> Alert | None:
    async with db.asession() as session:
        stmt = (select(Alert).where(Alert.kind == kind, col(Alert.at) >= since)
                .order_by(col(Alert.id).desc()).limit(1))
        return (await session.exec(stmt)).first()


async def recent_alerts(db: Database, limit: int = 20) -> list[Alert]:
    async with db.asession() as session:
        return list((await session.exec(select(Alert).order_by(col(Alert.id).desc()).limit(limit))).all())


@dataclass(frozen=True)
class Alerter:
    """Raises alerts: the database stores them, Redis dedupes across processes, the notifier sends them."""

    settings: Settings
    db: Database
    redis: Redis | None  # None: the table alone dedupes
    notifier: Notifier

    async def raise_alert(self, kind: str, message: str, *, quiet_since: datetime | None = None) -> Alert | None:
        """Store, log and send an alert unless one of ``kind`` was raised since ``quiet_since``.

        ``quiet_since`` defaults to now minus ``alert_cooldown_minutes``. Returns the stored alert, or None when
        it was suppressed.
        """
        now = utc_now()
        cooldown = timedelta(minutes=self.settings.alert_cooldown_minutes)
        quiet_since = quiet_since or now - cooldown
        if await last_alert(self.db, kind, quiet_since) is not None:
            return None
        lock_s = max(1, int((now - quiet_since).total_seconds()))
        try:
            if self.redis is None:
                raise ConnectionError("no Redis")
            if not await self.redis.set(f"{LOCK_PREFIX}{kind}", now.isoformat(), nx=True, ex=lock_s):
                return None  # another process is raising the same alert right now
        except Exception:  # noqa: BLE001 - no Redis: the table alone dedupes (a rare double alert is acceptable)
            log.warning("alerts.lock_unavailable", kind=kind)
        async with self.db.asession() as session:
            alert = Alert(kind=kind, message=message, at=now)
            session.add(alert)
            await session.commit()
            await session.refresh(alert)
        log.warning("alert", kind=kind, message=message)
        if await self.notifier.notify(message):
            async with self.db.asession() as session:
                row = await session.get(Alert, alert.id)
                if row is not None:
                    row.delivered = True
                    session.add(row)
                    await session.commit()
                    alert = row
        return alert
