"""The one clock: timezone-aware UTC timestamps for everything Deskmate stores or compares."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    """Now, in UTC, timezone-aware (naive datetimes are never stored)."""
    return datetime.now(timezone.utc)
