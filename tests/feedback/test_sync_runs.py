"""Migration 0006 (sync runs) on SQLite and a real PostgreSQL: runs are recorded and read back per source, and
the migration goes down and up again."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from alembic import command

from feedback.db import Database, alembic_config
from feedback.sync_runs import DETAIL_LIMIT, last_runs, recent_runs, record_run
from knowledge.connectors.sync import SyncResult
from knowledge.sources import SkippedFile


def test_runs_are_recorded_and_read_back(url: str) -> None:
    cfg = alembic_config(url)
    command.upgrade(cfg, "head")
    db = Database(url)
    start = datetime(2026, 12, 2, 10, 0, tzinfo=timezone.utc)
    try:
        with db.session() as session:
            many = [f"hr/doc-{i}" for i in range(DETAIL_LIMIT + 50)]
            record_run(session, SyncResult("hr", "folder", "default", start, status="ok", added=many,
                                           skipped=[SkippedFile("hr/x.png", "unsupported file type '.png'")],
                                           index_version=3, seconds=1.25))
            record_run(session, SyncResult("hr", "folder", "default", start + timedelta(hours=1),
                                           status="unchanged", unchanged=many))
            record_run(session, SyncResult("eng", "git", "default", start, status="failed",
                                           errors=["git clone failed: repository not found"]), trigger="schedule")
        with db.session() as session:
            hr = recent_runs(session, "hr")
            assert [r.status for r in hr] == ["unchanged", "ok"]
            assert hr[1].added == DETAIL_LIMIT + 50 and len(hr[1].detail["added"]) == DETAIL_LIMIT
            assert hr[1].skipped == [{"path": "hr/x.png", "reason": "unsupported file type '.png'"}]
            assert hr[1].index_version == 3 and hr[1].seconds == 1.25
            last = last_runs(session)
            assert (last["hr"].status, last["eng"].status, last["eng"].trigger) == ("unchanged", "failed", "schedule")
            assert last["eng"].errors == ["git clone failed: repository not found"]
    finally:
        db.engine.dispose()

    command.downgrade(cfg, "0005_not_found_level")
    engine = sa.create_engine(Database(url).url)
    try:
        assert "syncrun" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
    command.upgrade(cfg, "head")
