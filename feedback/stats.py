"""Totals over all recorded questions and votes, for the operators' figures (``/metrics``).

Counts since the first question, not over a window: what Prometheus turns into rates. The windowed figures
(last hour, today's spend) are :mod:`playbooks.status`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.core.types import Status
from feedback.models import Feedback, Interaction


@dataclass(frozen=True)
class StatusCount:
    """Questions of one platform in one status, split by whether the answer was the extractive fallback."""

    platform: str
    status: str
    fallback: bool
    count: int


@dataclass
class Totals:
    by_status: list[StatusCount] = field(default_factory=list)
    #: When the oldest question still pending was recorded (SQLite returns it naive, in UTC); None when none is.
    oldest_pending_at: datetime | None = None
    #: Current votes by label (``up``, ``down``; a changed vote moves).
    votes: dict[str, int] = field(default_factory=dict)


async def totals(session: AsyncSession) -> Totals:
    by_status = (await session.exec(  # type: ignore[call-overload]
        select(Interaction.platform, Interaction.status, Interaction.fallback, func.count())
        .group_by(col(Interaction.platform), col(Interaction.status), col(Interaction.fallback)))).all()
    oldest_pending = (await session.exec(  # type: ignore[call-overload]
        select(func.min(Interaction.created_at)).where(Interaction.status == Status.PENDING))).one()
    votes = (await session.exec(  # type: ignore[call-overload]
        select(Feedback.label, func.count()).group_by(Feedback.label))).all()
    return Totals(
        by_status=[StatusCount(str(platform), str(status), bool(fallback), int(count))
                   for platform, status, fallback, count in by_status],
        oldest_pending_at=oldest_pending,
        votes={str(label): int(count) for label, count in votes},
    )
