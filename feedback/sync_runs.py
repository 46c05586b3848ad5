"""Sync runs of knowledge sources: recording each run (:class:`~feedback.models.SyncRun`) and reading them back
for ``deskmate source list|show`` and the worker's schedule (when did a source last run)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlmodel import Session, col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from feedback.models import SyncRun
from knowledge.connectors.sync import SyncResult

#: At most this many document ids / skip reasons / errors are stored per run (the counts are always exact).
DETAIL_LIMIT = 200


def run_from_result(result: SyncResult, *, trigger: str = "cli") -> SyncRun:
    def cap(items: list[str]) -> list[str]:
        return items[:DETAIL_LIMIT]

    return SyncRun(
        source=result.source, kind=result.kind, kb=result.kb, status=result.status,
        started_at=result.started_at, seconds=round(result.seconds, 3),
        added=len(result.added), updated=len(result.updated), unchanged=len(result.unchanged),
        deleted=len(result.deleted), index_version=result.index_version,
        detail={"added": cap(result.added), "updated": cap(result.updated), "deleted": cap(result.deleted),
                "created_version": result.created_version, "skipped_total": len(result.skipped),
                "errors_total": len(result.errors)},
        skipped=[asdict(s) for s in result.skipped[:DETAIL_LIMIT]],
        errors=cap(result.errors), trigger=trigger,
    )


def record_run(session: Session, result: SyncResult, *, trigger: str = "cli") -> SyncRun:
    run = run_from_result(result, trigger=trigger)
    session.add(run)
    session.commit()
    session.refresh(run)
    return run


def recent_runs(session: Session, source: str, limit: int = 10) -> list[SyncRun]:
    """The newest runs of ``source`` first."""
    query = (select(SyncRun).where(SyncRun.source == source)
             .order_by(col(SyncRun.started_at).desc(), col(SyncRun.id).desc()).limit(limit))
    return list(session.exec(query).all())


def _last_runs_query() -> Any:
    newest = (select(SyncRun.source, func.max(SyncRun.id).label("id")).group_by(col(SyncRun.source)).subquery())
    return select(SyncRun).join(newest, col(SyncRun.id) == newest.c.id)


def last_runs(session: Session) -> dict[str, SyncRun]:
    """The latest run of every source that ever ran."""
    return {run.source: run for run in session.exec(_last_runs_query()).all()}


async def last_runs_async(session: AsyncSession) -> dict[str, SyncRun]:
    """:func:`last_runs` for the async processes (the dashboard)."""
    return {run.source: run for run in (await session.exec(_last_runs_query())).all()}
