"""The kill-switch: global and per-channel modes, read from the database on every message.

Modes, from most to least restrictive:

- ``off``: no answer; the user gets the maintenance message (the question is still recorded).
- ``retrieval-only``: no LLM call; cited extractive answers.
- ``on``: normal.

The effective mode of a message is the most restrictive of the global switch and its channel's switch, so an
operator can silence one noisy channel, or everything, from one command. Because every process reads the
table per message (the worker: :mod:`playbooks.state`, in the answer's first transaction), a change is obeyed by
every web and worker process at the next message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from enum import StrEnum
from typing import Protocol, TypeVar

from sqlalchemy import delete
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.core.clock import utcnow
from feedback.models import Switch

GLOBAL_SCOPE = "global"
_Row = TypeVar("_Row", bound="SwitchLike")


class Mode(StrEnum):
    ON = "on"
    RETRIEVAL_ONLY = "retrieval-only"
    OFF = "off"

    @property
    def severity(self) -> int:
        return {Mode.ON: 0, Mode.RETRIEVAL_ONLY: 1, Mode.OFF: 2}[self]


def channel_scope(platform: str, channel: str) -> str:
    return f"{platform}:{channel}"


def parse_mode(text: str) -> Mode:
    value = text.strip().lower().replace("_", "-")
    aliases = {"retrieval": Mode.RETRIEVAL_ONLY, "extractive": Mode.RETRIEVAL_ONLY, "pause": Mode.OFF}
    if value in aliases:
        return aliases[value]
    try:
        return Mode(value)
    except ValueError as exc:
        raise ValueError(f"unknown mode '{text}': use on, off or retrieval-only") from exc


async def get_switch(session: AsyncSession, scope: str) -> Switch | None:
    return await session.get(Switch, scope)


def is_expired(row: SwitchLike, now: datetime | None = None) -> bool:
    """An automatic switch (the budget guard's) lapses at the next midnight UTC; an admin's never does."""
    if not row.automatic:
        return False
    now = now or datetime.now(timezone.utc)
    midnight = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    set_at = row.set_at if row.set_at.tzinfo else row.set_at.replace(tzinfo=timezone.utc)
    return set_at < midnight


async def effective_mode(session: AsyncSession, platform: str, channel: str) -> tuple[Mode, Switch | None]:
    """The mode a message in ``channel`` gets, and the switch that decided it (None = default on).

    An expired automatic switch is ignored here (no write on the answer path); the guard deletes it.
    """
    scopes = [GLOBAL_SCOPE] + ([channel_scope(platform, channel)] if channel else [])
    rows = (await session.exec(select(Switch).where(Switch.scope.in_(scopes)))).all()  # type: ignore[attr-defined]
    return _worst(rows, scopes, datetime.now(timezone.utc))


def mode_of(rows: Sequence[SwitchLike], platform: str, channel: str, now: datetime) -> tuple[Mode, str | None]:
    """The mode a message in ``channel`` gets from the switch ``rows`` (all of them, or those of its scopes) and
    the deciding switch's reason — :func:`effective_mode` over rows already read."""
    scopes = [GLOBAL_SCOPE] + ([channel_scope(platform, channel)] if channel else [])
    mode, row = _worst(rows, scopes, now)
    return mode, (row.reason if row is not None else None)


class SwitchLike(Protocol):
    """A switch row: the ORM object or a plain row of its columns."""

    @property
    def scope(self) -> str: ...

    @property
    def mode(self) -> str: ...

    @property
    def reason(self) -> str: ...

    @property
    def automatic(self) -> bool: ...

    @property
    def set_at(self) -> datetime: ...


def _worst(rows: Sequence[_Row], scopes: list[str], now: datetime) -> tuple[Mode, _Row | None]:
    worst: tuple[Mode, _Row | None] = (Mode.ON, None)
    for row in rows:
        if row.scope not in scopes or is_expired(row, now):
            continue
        mode = Mode(row.mode)
        if mode.severity > worst[0].severity:
            worst = (mode, row)
    return worst


async def set_mode(session: AsyncSession, scope: str, mode: Mode, *, actor: str, reason: str = "",
                   automatic: bool = False) -> tuple[str, str]:
    """Set a switch and commit; returns (before, after) for the audit log. ``on`` removes the row."""
    row = await session.get(Switch, scope)
    before = row.mode if row else Mode.ON.value
    if mode == Mode.ON:
        if row is not None:
            await session.delete(row)
    else:
        if row is None:
            row = Switch(scope=scope, mode=mode.value)
        row.mode, row.reason, row.set_by, row.automatic, row.set_at = mode.value, reason, actor, automatic, utcnow()
        session.add(row)
    await session.commit()
    return before, mode.value


async def list_switches(session: AsyncSession) -> list[Switch]:
    return list((await session.exec(select(Switch).order_by(Switch.scope))).all())


async def clear_expired(session: AsyncSession, now: datetime | None = None) -> list[str]:
    """Delete automatic switches set before today (UTC); returns the scopes cleared.

    One conditional DELETE, so two workers clearing at once (or an admin re-setting the switch meanwhile,
    which makes it non-automatic) cannot clobber each other.
    """
    now = now or datetime.now(timezone.utc)
    midnight = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    stale = (col(Switch.automatic).is_(True)) & (col(Switch.set_at) < midnight)
    scopes = list((await session.exec(select(Switch.scope).where(stale))).all())
    if scopes:
        await session.exec(delete(Switch).where(stale).where(col(Switch.scope).in_(scopes)))  # type: ignore[call-overload]
        await session.commit()
    return scopes
