"""Migration 0005 (the release's calibrated "not found" level) on SQLite and on a real PostgreSQL: a release made
before it keeps deciding on the raw cosine (NULL level), a new release from the settings and a new release with
--not-found-level carry a level, a level outside 0-1 is refused, and the migration goes down and up again."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from feedback.db import Database, alembic_config
from feedback.releases import active_release, initial_release
from knowledge.retrieval import FusionConfig
from playbooks.releases import ReleaseError, create_release
from tests.conftest import settings_for
from tests.feedback.test_query_rewrite_migration import insert_old_release


async def test_old_releases_keep_the_raw_cosine_and_new_ones_are_calibrated(url: str, sample_data_dir: Path) -> None:
    cfg = alembic_config(url)
    command.upgrade(cfg, "0004_query_rewrite")
    insert_old_release(url)
    command.upgrade(cfg, "head")

    settings = settings_for(sample_data_dir, database_url=url, retrieval_not_found_level=0.8)
    db = Database(url)
    try:
        async with db.asession() as session:
            old = await active_release(session, settings)
            assert (old.name, old.not_found_level, old.min_score) == ("old", None, 0.3)
            assert FusionConfig.from_dict(old.fusion).crosslingual is False, "it searches as it did"
            copied = await create_release(session, settings, "copy", actor="test")
            assert copied.not_found_level is None, "a release copies its base's decision"
            new = await create_release(session, settings, "calibrated", actor="test", not_found_level=0.6)
            assert new.not_found_level == 0.6
            with pytest.raises(ReleaseError, match="between 0 and 1"):
                await create_release(session, settings, "bad", actor="test", not_found_level=1.5)
    finally:
        await db.aclose()

    fresh = initial_release(settings)
    assert fresh.not_found_level == 0.8 and FusionConfig.from_dict(fresh.fusion).crosslingual is True
    assert FusionConfig.from_dict(fresh.fusion).alternative_merge == "confidence", "a new deployment gets it"

    command.downgrade(cfg, "0004_query_rewrite")
    engine = sa.create_engine(Database(url).url)
    try:
        assert "not_found_level" not in {c["name"] for c in sa.inspect(engine).get_columns("release")}
    finally:
        engine.dispose()
    command.upgrade(cfg, "head")
