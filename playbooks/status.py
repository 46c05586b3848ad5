"""The figures an operator checks in an incident, computed from the database with aggregate queries.

Shared by the ``status``/``budget``/``releases`` admin commands, the budget guard and the alerts, so the number
in an alert is the number ``status`` shows. Everything here is read-only and cheap (a few aggregate queries).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import case, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.core.types import Status
from feedback.interactions import DeliveryState
from feedback.models import EvalRun, Feedback, Interaction

#: Fallback reasons that are chosen, not suffered: they say nothing about the LLM provider's health.
#: (Mirrors bot.answering.REASON_NO_KEY / REASON_RETRIEVAL_ONLY; kept literal so the web process stays light.)
INTENTIONAL_FALLBACKS = ("no API key configured", "retrieval-only mode")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def day_start(now: datetime | None = None) -> datetime:
    """Midnight UTC of ``now``'s day: the budget and automatic switches reset here."""
    now = now or utc_now()
    return now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def next_reset(now: datetime | None = None) -> datetime:
    return day_start(now) + timedelta(days=1)


def pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.0f}%" if whole else "n/a"


@dataclass
class WindowStats:
    """What happened to the questions finished since ``since``."""

    since: datetime
    by_status: dict[str, int] = field(default_factory=dict)
    fallbacks: int = 0  # suffered fallbacks (LLM errors, timeouts, open circuit)
    llm_answers: int = 0  # answers where the LLM was meant to be used (denominator of the fallback rate)
    up: int = 0
    down: int = 0
    cost_usd: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def answered(self) -> int:
        return self.by_status.get(Status.ANSWERED, 0) + self.by_status.get(Status.NOT_FOUND, 0)

    @property
    def errors(self) -> int:
        return self.by_status.get(Status.ERROR, 0)

    @property
    def maintenance(self) -> int:
        return self.by_status.get(Status.MAINTENANCE, 0)

    @property
    def error_rate(self) -> float:
        return self.errors / self.total if self.total else 0.0

    @property
    def fallback_rate(self) -> float:
        return self.fallbacks / self.llm_answers if self.llm_answers else 0.0


async def window_stats(session: AsyncSession, since: datetime) -> WindowStats:
    stats = WindowStats(since=since)
    stmt = (
        select(Interaction.status, Interaction.fallback, Interaction.fallback_reason, func.count(),  # type: ignore[call-overload]
               func.coalesce(func.sum(Interaction.cost_usd), 0.0))
        .where(col(Interaction.answered_at) >= since)
        .group_by(Interaction.status, Interaction.fallback, Interaction.fallback_reason)
    )
    for status, fallback, reason, count, cost in (await session.exec(stmt)).all():  # type: ignore[call-overload]
        stats.by_status[status] = stats.by_status.get(status, 0) + int(count)
        stats.cost_usd += float(cost or 0.0)
        if status not in (Status.ANSWERED, Status.NOT_FOUND):
            continue
        if fallback and reason in INTENTIONAL_FALLBACKS:
            continue
        stats.llm_answers += int(count)
        if fallback:
            stats.fallbacks += int(count)
    votes = select(Feedback.label, func.count()).where(col(Feedback.updated_at) >= since).group_by(Feedback.label)
    for label, count in (await session.exec(votes)).all():  # type: ignore[call-overload]
        if label == "up":
            stats.up = int(count)
        elif label == "down":
            stats.down = int(count)
    return stats


async def spend_since(session: AsyncSession, since: datetime) -> float:
    stmt = select(func.coalesce(func.sum(Interaction.cost_usd), 0.0)).where(col(Interaction.answered_at) >= since)
    return float((await session.exec(stmt)).one() or 0.0)  # type: ignore[call-overload]


async def spend_today(session: AsyncSession, now: datetime | None = None) -> float:
    """LLM spend recorded since midnight UTC (the budget guard's figure)."""
    return await spend_since(session, day_start(now))


async def downvotes_over_last(session: AsyncSession, n: int) -> tuple[int, int]:
    """(👎, rated) over the ``n`` most recently voted answers (escalations without a vote do not count)."""
    stmt = (
        select(Feedback.label).where(col(Feedback.label).in_(["up", "down"]))
        .order_by(col(Feedback.updated_at).desc(), col(Feedback.id).desc()).limit(n)
    )
    labels = list((await session.exec(stmt)).all())
    return sum(1 for label in labels if label == "down"), len(labels)


#: How an operator reads a row's delivery state.
DELIVERY_LABELS = {DeliveryState.PENDING: "answered, not yet delivered", DeliveryState.FAILED: "delivery failed",
                   DeliveryState.DELIVERED: "delivered"}


@dataclass(frozen=True)
class DeliveryProblem:
    """A final interaction whose reply the user has not got: still being retried, or given up."""

    interaction_id: int
    platform: str
    channel: str
    status: str
    state: str
    answered_at: datetime | None
    attempts: int
    error: str | None
    next_attempt_at: datetime | None

    @property
    def label(self) -> str:
        return DELIVERY_LABELS.get(DeliveryState(self.state), self.state)


async def delivery_problems(session: AsyncSession, limit: int = 50) -> list[DeliveryProblem]:
    """Answers not yet delivered, then deliveries given up; newest first within each, at most ``limit``."""
    problems: list[DeliveryProblem] = []
    for state in (DeliveryState.PENDING, DeliveryState.FAILED):
        if len(problems) >= limit:
            break
        stmt = (select(Interaction).where(Interaction.delivery_state == state.value)
                .order_by(col(Interaction.id).desc()).limit(limit - len(problems)))
        for row in (await session.exec(stmt)).all():
            assert row.id is not None
            problems.append(DeliveryProblem(
                interaction_id=row.id, platform=row.platform, channel=row.channel, status=row.status, state=state.value,
                answered_at=row.answered_at, attempts=row.delivery_attempts, error=row.delivery_error,
                next_attempt_at=row.delivery_next_at))
    return problems


@dataclass
class ReleaseFigures:
    answers: int = 0
    up: int = 0
    down: int = 0
    fallbacks: int = 0
    eval_metrics: dict[str, Any] | None = None
    eval_dataset: str | None = None
    eval_at: datetime | None = None


async def release_figures(session: AsyncSession) -> dict[str, ReleaseFigures]:
    """Per release: answers, 👍/👎 on its answers, fallbacks, and its latest stored eval run."""
    figures: dict[str, ReleaseFigures] = {}
    answers = (
        select(Interaction.release, func.count(), func.sum(case((col(Interaction.fallback).is_(True), 1), else_=0)))
        .where(col(Interaction.release).is_not(None))
        .group_by(Interaction.release)
    )
    for name, count, fallbacks in (await session.exec(answers)).all():  # type: ignore[call-overload]
        fig = figures.setdefault(str(name), ReleaseFigures())
        fig.answers, fig.fallbacks = int(count), int(fallbacks or 0)
    votes = (
        select(Interaction.release, Feedback.label, func.count())
        .join(Interaction, col(Interaction.id) == col(Feedback.interaction_id))
        .where(col(Interaction.release).is_not(None))
        .group_by(Interaction.release, Feedback.label)
    )
    for name, label, count in (await session.exec(votes)).all():  # type: ignore[call-overload]
        fig = figures.setdefault(str(name), ReleaseFigures())
        if label == "up":
            fig.up = int(count)
        elif label == "down":
            fig.down = int(count)
    runs = (await session.exec(select(EvalRun).order_by(col(EvalRun.id)))).all()
    for run in runs:  # later runs overwrite earlier ones: the latest wins
        fig = figures.setdefault(run.release_name, ReleaseFigures())
        fig.eval_metrics, fig.eval_dataset, fig.eval_at = dict(run.metrics), run.dataset, run.at
    return figures


def format_metrics(metrics: dict[str, Any] | None, limit: int = 4) -> str:
    if not metrics:
        return "—"
    parts = []
    for key, value in list(metrics.items())[:limit]:
        if isinstance(value, float):
            parts.append(f"{key}={value:.2f}")
        elif isinstance(value, (int, str, bool)):
            parts.append(f"{key}={value}")
    return ", ".join(parts) or "—"
