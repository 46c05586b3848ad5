"""The audit log: every admin action, allowed or refused — who, where, what, before, after, when.

Entries are written by :mod:`playbooks.admin` (chat and CLI share it) and read by ``deskmate admin audit`` and
the ``audit`` admin command. The table is append-only: nothing in Deskmate updates or deletes a row.
"""

from __future__ import annotations

from sqlalchemy import or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from feedback.models import AuditEntry


async def record(session: AsyncSession, *, actor: str, platform: str, where: str, command: str, allowed: bool,
                 before: str = "", after: str = "", detail: str = "") -> AuditEntry:
    entry = AuditEntry(actor=actor[:255], platform=platform[:32], where=where[:255], command=command,
                       allowed=allowed, before=before, after=after, detail=detail)
    session.add(entry)
    await session.commit()
    await session.refresh(entry)
    return entry


async def recent(session: AsyncSession, limit: int = 50, *, actor: str | None = None) -> list[AuditEntry]:
    """The newest ``limit`` entries, newest first."""
    stmt = select(AuditEntry)
    if actor:  # "slack:U0123" also matches "slack:U0123 (alice)"
        stmt = stmt.where(or_(col(AuditEntry.actor) == actor, col(AuditEntry.actor).startswith(f"{actor} (")))
    stmt = stmt.order_by(col(AuditEntry.id).desc()).limit(limit)
    return list((await session.exec(stmt)).all())
