"""Migration 0004 (the release's query rewrite, the interaction's search query) on SQLite and on a real PostgreSQL:
a release made before it keeps searching the message as written ("off"), a new release can change that, the
searched query is recorded, and the migration goes down and up again."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from bot.core.clock import utcnow
from bot.core.types import Answer, Platform, Question
from feedback.db import Database, alembic_config
from feedback.interactions import InteractionStore
from feedback.releases import active_release, get_release
from playbooks.releases import ReleaseError, create_release
from tests.conftest import settings_for


def insert_old_release(url: str) -> None:
    """The active release as the schema before 0004 stored it."""
    engine = sa.create_engine(Database(url).url)
    try:
        meta = sa.MetaData()
        release = sa.Table("release", meta, autoload_with=engine)
        event = sa.Table("releaseevent", meta, autoload_with=engine)
        with engine.begin() as conn:
            conn.execute(release.insert().values(
                name="old", prompt_template="Answer from the sources.", prompt_version="v1", model="claude-sonnet-5-5",
                max_tokens=1024, temperature=0.0, kb="default", index_version=None, retrieval_k=6,
                retrieval_candidates=40, min_score=0.3, fusion={}, knowledge_sets=[], notes="", created_by="test",
                created_at=utcnow()))
            conn.execute(event.insert().values(release_name="old", previous=None, action="bootstrap", actor="test",
                                               forced=False, at=utcnow()))
    finally:
        engine.dispose()


async def test_old_releases_keep_searching_the_message_and_new_ones_can_rewrite(url: str,
                                                                                 sample_data_dir: Path) -> None:
    cfg = alembic_config(url)
    command.upgrade(cfg, "0003_delivery")
    insert_old_release(url)
    command.upgrade(cfg, "head")

    settings = settings_for(sample_data_dir, database_url=url)
    db = Database(url)
    try:
        async with db.asession() as session:
            old = await active_release(session, settings)
            assert (old.name, old.query_rewrite, old.rewrite_model) == ("old", "off", "claude-haiku-4-5")
            copied = await create_release(session, settings, "copy", actor="test")
            assert copied.query_rewrite == "off", "a release copies its base's search query"
            new = await create_release(session, settings, "rewrites", actor="test", query_rewrite="auto",
                                       rewrite_model="claude-haiku-4-5-20251001")
            with pytest.raises(ReleaseError, match="query_rewrite must be one of"):
                await create_release(session, settings, "bad", actor="test", query_rewrite="sometimes")
        async with db.asession() as session:
            stored = await get_release(session, "rewrites")
            assert stored is not None and (stored.query_rewrite, stored.rewrite_model) == (
                new.query_rewrite, "claude-haiku-4-5-20251001")

        store = InteractionStore(db, user_salt="salt")
        interaction_id, _ = await store.record_pending(Question(
            idempotency_key="slack:1", platform=Platform.SLACK, channel="C1", user="U1", text="and if it fails?"))
        answer = Answer(text="Open a ticket.", search_query="and if it fails? vpn working")
        await store.finalize(interaction_id, answer, [], index_version=None)
        row = await store.get(interaction_id)
        assert row is not None and row.search_query == "and if it fails? vpn working"
    finally:
        await db.aclose()

    command.downgrade(cfg, "0003_delivery")
    engine = sa.create_engine(Database(url).url)
    try:
        inspector = sa.inspect(engine)
        assert "search_query" not in {c["name"] for c in inspector.get_columns("interaction")}
        assert not {"query_rewrite", "rewrite_model"} & {c["name"] for c in inspector.get_columns("release")}
    finally:
        engine.dispose()
    command.upgrade(cfg, "head")
