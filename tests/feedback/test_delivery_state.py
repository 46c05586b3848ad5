"""Migration 0003 (the interaction's delivery state) on SQLite and on a real PostgreSQL, and the store's delivery
queries on both: rows recorded before it keep a NULL state (not counted, never re-delivered); a new answer's
delivery goes pending → retried → delivered or failed; the sweeper's list and the totals follow."""

from __future__ import annotations

import uuid
from datetime import timedelta

import sqlalchemy as sa
from alembic import command

from bot.core.clock import utcnow
from bot.core.types import Answer, Platform, Question
from feedback.db import Database, alembic_config
from feedback.interactions import DeliveryState, InteractionStore
from feedback.stats import delivery_totals


def insert_old_row(url: str) -> None:
    """An answered interaction as the schema before 0003 stored it."""
    engine = sa.create_engine(Database(url).url)
    try:
        table = sa.Table("interaction", sa.MetaData(), autoload_with=engine)
        with engine.begin() as conn:
            conn.execute(table.insert().values(
                idempotency_key="old:1", platform="slack", workspace="T1", channel="C1", thread="t", user_hash="u",
                question="old question", question_payload={}, status="answered", answer="old answer", sources=[],
                passages=[], fallback=False, latency_ms={}, input_tokens=0, output_tokens=0, cache_read_tokens=0,
                cache_write_tokens=0, cost_usd=0.0, attempts=1, delivery={"ts": "1.2"}, created_at=utcnow(),
                answered_at=utcnow() - timedelta(hours=1)))
    finally:
        engine.dispose()


def question() -> Question:
    return Question(idempotency_key=f"slack:{uuid.uuid4().hex}", platform=Platform.SLACK, channel="C1", user="U1",
                    text="How do I book travel?")


async def test_migration_and_the_delivery_life_of_an_answer(url: str) -> None:
    cfg = alembic_config(url)
    command.upgrade(cfg, "0002_admin")
    insert_old_row(url)
    command.upgrade(cfg, "head")

    db = Database(url)
    store = InteractionStore(db, user_salt="salt")
    try:
        old = await store.get(1)
        assert old is not None and old.answer == "old answer"
        assert (old.delivery_state, old.delivery_attempts, old.delivered_at) == (None, 0, None), "not tracked"

        retried, _ = await store.record_pending(question())
        given_up, _ = await store.record_pending(question())
        for interaction_id in (retried, given_up):
            await store.finalize(interaction_id, Answer(text="Use the portal."), [], index_version=None)
        row = await store.get(retried)
        assert row is not None and (row.delivery_state, row.delivery_attempts) == ("pending", 0)

        now = utcnow()
        assert await store.record_delivery_failure(retried, "HTTP 503", final=False,
                                                   next_at=now + timedelta(seconds=2)) == 1
        assert await store.record_delivery_failure(given_up, "channel_not_found", final=True) == 1
        assert await store.undelivered(older_than_s=0, limit=10) == [(retried, row.idempotency_key)]
        assert await store.undelivered(older_than_s=3600, limit=10) == [], "a fresh answer is left to its job"
        async with db.asession() as session:
            totals = await delivery_totals(session)
        assert (totals.undelivered, totals.failed, totals.delivered, totals.failed_attempts) == (1, 1, 0, 2)
        assert totals.oldest_undelivered_at is not None

        assert await store.mark_delivered(retried, {"ts": "9.9"}, {"deliver": 12.0})
        assert not await store.mark_delivered(retried, {"ts": "other"}), "delivered once: a second mark is refused"
        assert not await store.mark_delivered(given_up, {"ts": "late"}), "a given-up delivery stays given up"
        row = await store.get(retried)
        assert row is not None and row.delivery_state == DeliveryState.DELIVERED and row.delivery == {"ts": "9.9"}
        assert row.delivery_attempts == 2 and row.delivered_at is not None and row.delivery_next_at is None
        async with db.asession() as session:
            totals = await delivery_totals(session)
        assert (totals.undelivered, totals.failed, totals.delivered, totals.failed_attempts) == (0, 1, 1, 2)
    finally:
        await db.aclose()

    command.downgrade(cfg, "0002_admin")
    engine = sa.create_engine(Database(url).url)
    try:
        columns = {c["name"] for c in sa.inspect(engine).get_columns("interaction")}
    finally:
        engine.dispose()
    assert not {"delivery_state", "delivery_attempts", "delivered_at"} & columns
    command.upgrade(cfg, "head")
