"""The dashboard's figures over a window of days, read from the database (any process computes the same).

Per day (UTC, by the day an answer was recorded): answers by status, end-to-end latency p50/p95, LLM cost; per
release and day: the 👍 rate and the LLM fallback rate — a release only has points on days it answered, so its
line starts where it was promoted and stops where it was replaced (a rollback shows as the old line resuming).
Release changes in the window are returned as events for markers. The fallback rate counts the same fallbacks as
``status`` and the alerts (:data:`playbooks.status.INTENTIONAL_FALLBACKS` excluded).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlmodel import col, select

from bot.core.settings import Settings
from bot.core.types import Status
from feedback.db import Database
from feedback.models import AuditEntry, Feedback, Interaction, Release, ReleaseEvent
from feedback.stats import delivery_totals
from feedback.sync_runs import last_runs_async
from knowledge.connectors.config import SourcesConfigError, load_sources
from playbooks.killswitch import is_expired, list_switches
from playbooks.releases import list_releases
from feedback.releases import active_release
from playbooks.status import INTENTIONAL_FALLBACKS, day_start, delivery_problems, release_figures

MAX_DAYS = 90
STATUSES = (Status.ANSWERED, Status.NOT_FOUND, Status.MAINTENANCE,
            Status.ERROR)


def aware(moment: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes (stored as UTC)."""
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def iso(moment: datetime | None) -> str | None:
    moment = aware(moment)
    return moment.isoformat(timespec="seconds") if moment else None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class Window:
    days: int
    start: datetime  # midnight UTC of the first day
    end: datetime

    @classmethod
    def last(cls, days: int, now: datetime | None = None) -> Window:
        days = max(1, min(MAX_DAYS, int(days)))
        now = now or datetime.now(timezone.utc)
        return cls(days=days, start=day_start(now) - timedelta(days=days - 1), end=now)

    @property
    def labels(self) -> list[str]:
        return [(self.start + timedelta(days=i)).date().isoformat() for i in range(self.days)]

    def index(self, moment: datetime | None) -> int | None:
        moment = aware(moment)
        if moment is None or moment < self.start:
            return None
        i = (moment - self.start).days
        return i if i < self.days else None


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


async def overview(db: Database, settings: Settings, window: Window) -> dict[str, Any]:
    """Everything the four charts plot, as JSON-ready lists aligned with ``labels``."""
    n = window.days
    async with db.asession() as session:
        rows = (await session.exec(select(  # type: ignore[call-overload]
            Interaction.id, Interaction.created_at, Interaction.answered_at, Interaction.status, Interaction.release,
            Interaction.fallback, Interaction.fallback_reason, Interaction.latency_ms, Interaction.cost_usd,
        ).where(col(Interaction.answered_at) >= window.start))).all()
        votes = (await session.exec(  # type: ignore[call-overload]
            select(Feedback.interaction_id, Feedback.label)
            .join(Interaction, col(Interaction.id) == col(Feedback.interaction_id))
            .where(col(Interaction.answered_at) >= window.start))).all()
        events = (await session.exec(select(ReleaseEvent).where(col(ReleaseEvent.at) >= window.start)
                                     .order_by(col(ReleaseEvent.id)))).all()
        earlier = (await session.exec(select(ReleaseEvent).where(col(ReleaseEvent.at) < window.start)
                                      .order_by(col(ReleaseEvent.id).desc()).limit(1))).first()
        active = (await active_release(session, settings)).name
    labels_by_id: dict[int, list[str]] = {}
    for interaction_id, label in votes:
        labels_by_id.setdefault(interaction_id, []).append(label)

    per_status = {s: [0] * n for s in STATUSES}
    cost = [0.0] * n
    latencies: list[list[float]] = [[] for _ in range(n)]
    per_release: dict[str, dict[str, list[int]]] = {}
    for (iid, created, answered, status, release, fallback, reason, latency_ms, cost_usd) in rows:
        i = window.index(answered)
        if i is None or status not in per_status:
            continue
        per_status[status][i] += 1
        cost[i] += float(cost_usd or 0.0)
        if status in (Status.ANSWERED, Status.NOT_FOUND):
            created_at, answered_at = aware(created), aware(answered)
            if created_at and answered_at:
                latencies[i].append(max(0.0, (answered_at - created_at).total_seconds()))
        if not release:
            continue
        fig = per_release.setdefault(release, {k: [0] * n for k in ("answers", "up", "down", "llm", "fallbacks")})
        fig["answers"][i] += 1
        for label in labels_by_id.get(iid, []):
            if label in ("up", "down"):
                fig[label][i] += 1
        if status in (Status.ANSWERED, Status.NOT_FOUND) and not (
                fallback and reason in INTENTIONAL_FALLBACKS):
            fig["llm"][i] += 1
            fig["fallbacks"][i] += int(bool(fallback))

    releases: dict[str, Any] = {}
    for name, fig in sorted(per_release.items()):
        releases[name] = {
            "answers": fig["answers"],
            "up_rate": [_rate(fig["up"][i], fig["up"][i] + fig["down"][i]) if fig["answers"][i] else None
                        for i in range(n)],
            "fallback_rate": [_rate(fig["fallbacks"][i], fig["llm"][i]) if fig["answers"][i] else None
                              for i in range(n)],
            "votes": sum(fig["up"]) + sum(fig["down"]),
        }
    return {
        "window": {"days": n, "start": iso(window.start), "end": iso(window.end)},
        "labels": window.labels,
        "active_release": active,
        "release_at_start": earlier.release_name if earlier else None,
        "answers_per_day": per_status,
        "releases": releases,
        "release_events": [{"at": iso(e.at), "day": window.index(e.at), "release": e.release_name,
                            "previous": e.previous, "action": e.action, "actor": e.actor, "forced": e.forced}
                           for e in events],
        "latency_s": {"p50": [_round(percentile(v, 0.5)) for v in latencies],
                      "p95": [_round(percentile(v, 0.95)) for v in latencies]},
        "cost_usd": {"per_day": [round(c, 6) for c in cost], "budget": settings.daily_budget_usd,
                     "total": round(sum(cost), 6)},
        "totals": {s: sum(v) for s, v in per_status.items()},
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def release_row(release: Release, figures: Any, active: str) -> dict[str, Any]:
    return {
        "name": release.name, "active": release.name == active, "model": release.model, "kb": release.kb,
        "index_version": release.index_version, "prompt_version": release.prompt_version,
        "retrieval_k": release.retrieval_k, "min_score": release.min_score,
        "not_found_level": release.not_found_level, "knowledge_sets": release.knowledge_sets,
        "notes": release.notes, "created_by": release.created_by, "created_at": iso(release.created_at),
        "answers": figures.answers if figures else 0, "up": figures.up if figures else 0,
        "down": figures.down if figures else 0, "fallbacks": figures.fallbacks if figures else 0,
        "eval": figures.eval_metrics if figures else None,
    }


async def releases_view(db: Database, settings: Settings) -> dict[str, Any]:
    async with db.asession() as session:
        active = (await active_release(session, settings)).name
        releases = await list_releases(session)
        figures = await release_figures(session)
        history = (await session.exec(select(ReleaseEvent).order_by(col(ReleaseEvent.id).desc()).limit(30))).all()
    return {
        "active": active,
        "releases": [release_row(r, figures.get(r.name), active) for r in releases],
        "history": [{"at": iso(e.at), "release": e.release_name, "previous": e.previous, "action": e.action,
                     "actor": e.actor, "forced": e.forced} for e in history],
    }


async def switches_view(db: Database) -> list[dict[str, Any]]:
    async with db.asession() as session:
        rows = await list_switches(session)
    return [{"scope": s.scope, "mode": s.mode, "reason": s.reason, "set_by": s.set_by, "automatic": s.automatic,
             "set_at": iso(s.set_at), "expired": is_expired(s)} for s in rows]


async def delivery_view(db: Database, limit: int = 50) -> dict[str, Any]:
    """Replies the users have not got: how many answers are not yet delivered (being retried) and how many
    deliveries were given up, and those rows (not yet delivered first, newest first)."""
    async with db.asession() as session:
        totals = await delivery_totals(session)
        problems = await delivery_problems(session, max(1, min(500, limit)))
    return {
        "undelivered": totals.undelivered, "failed": totals.failed, "delivered": totals.delivered,
        "failed_attempts": totals.failed_attempts, "oldest_undelivered_at": iso(totals.oldest_undelivered_at),
        "rows": [{"interaction_id": p.interaction_id, "platform": p.platform, "channel": p.channel, "status": p.status,
                  "delivery_state": p.state, "label": p.label, "answered_at": iso(p.answered_at),
                  "attempts": p.attempts, "error": p.error, "next_attempt_at": iso(p.next_attempt_at)}
                 for p in problems],
    }


async def audit_view(db: Database, limit: int = 50) -> list[dict[str, Any]]:
    async with db.asession() as session:
        rows = (await session.exec(select(AuditEntry).order_by(col(AuditEntry.id).desc())
                                   .limit(max(1, min(500, limit))))).all()
    return [{"at": iso(e.at), "actor": e.actor, "platform": e.platform, "where": e.where, "command": e.command,
             "allowed": e.allowed, "before": e.before, "after": e.after, "detail": e.detail} for e in rows]


async def sources_view(db: Database, settings: Settings) -> dict[str, Any]:
    """Every knowledge source (declared in DESKMATE_SOURCES_FILE, or that ran before) with its last sync run."""
    error = None
    try:
        declared = {s.name: s for s in load_sources(settings.sources_file)}
    except SourcesConfigError as exc:
        declared, error = {}, str(exc)
    async with db.asession() as session:
        last = await last_runs_async(session)
    rows = []
    for name in list(declared) + sorted(set(last) - set(declared)):
        source, run = declared.get(name), last.get(name)
        rows.append({
            "name": name, "declared": source is not None, "kind": source.kind if source else run.kind if run else "",
            "schedule": source.schedule if source else "", "status": run.status if run else None,
            "started_at": iso(run.started_at) if run else None, "seconds": run.seconds if run else None,
            "added": run.added if run else 0, "updated": run.updated if run else 0,
            "deleted": run.deleted if run else 0, "unchanged": run.unchanged if run else 0,
            "skipped": len(run.skipped) if run else 0, "errors": list(run.errors[:3]) if run else [],
            "index_version": run.index_version if run else None,
        })
    return {"file": str(settings.sources_file), "error": error, "sources": rows}
