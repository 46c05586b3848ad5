"""Totals over all recorded questions and votes, for the operators' figures (``/metrics``, the dashboard).

Counts since the first question, not over a window: what Prometheus turns into rates. The windowed figures
(last hour, today's spend) are :mod:`playbooks.status`'s. :func:`delivery_totals`: answers not yet delivered
(the delivery is being retried), deliveries given up, and failed delivery attempts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import case, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.core.types import Status
from feedback.interactions import DeliveryState
from feedback.models import Feedback, Interaction


@dataclass(frozen=True)
class StatusCount:
    """Questions of one platform in one status, split by whether the answer was the extractive fallback."""

    platform: str
    status: str
    fallback: bool
    count: int


@dataclass
class DeliveryTotals:
    """Delivery of final answers (and failure notices) to the chat platforms, over all rows that track it."""

    #: answered, not yet delivered: the first attempt, or retries until the deadline
    undelivered: int = 0
    #: given up: a permanent error (e.g. ``channel_not_found``), or still failing at the deadline
    failed: int = 0
    delivered: int = 0
    #: delivery attempts that failed (each was retried, or its delivery given up)
    failed_attempts: int = 0
    #: when the oldest undelivered answer was recorded; None when none is
    oldest_undelivered_at: datetime | None = None


@dataclass
class Totals:
    by_status: list[StatusCount] = field(default_factory=list)
    #: When the oldest question still pending was recorded (SQLite returns it naive, in UTC); None when none is.
    oldest_pending_at: datetime | None = None
    #: Current votes by label (``up``, ``down``; a changed vote moves).
    votes: dict[str, int] = field(default_factory=dict)
    delivery: DeliveryTotals = field(default_factory=DeliveryTotals)


async def delivery_totals(session: AsyncSession) -> DeliveryTotals:
    state = col(Interaction.delivery_state)
    attempts = col(Interaction.delivery_attempts)
    stmt = (select(state, func.count(), func.coalesce(func.sum(attempts), 0),  # type: ignore[call-overload]
                   func.coalesce(func.sum(case((attempts > 0, 1), else_=0)), 0), func.min(Interaction.answered_at))
            .where(state.is_not(None)).group_by(state))
    rows = (await session.exec(stmt)).all()
    totals = DeliveryTotals()
    for name, count, attempts_sum, tried, oldest in rows:
        if name == DeliveryState.PENDING:
            totals.undelivered, totals.oldest_undelivered_at = int(count), oldest
            totals.failed_attempts += int(attempts_sum)
        elif name == DeliveryState.FAILED:
            totals.failed = int(count)
            totals.failed_attempts += int(attempts_sum)
        elif name == DeliveryState.DELIVERED:
            totals.delivered = int(count)
            totals.failed_attempts += int(attempts_sum) - int(tried)  # the last attempt of each succeeded
    return totals


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
        delivery=await delivery_totals(session),
    )
