"""The worker's first transaction for an answer (``InteractionStore.start_answer``): what it hands back is whole
even when the reads it runs for the answer commit or roll back their own work."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from feedback.db import Database
from feedback.interactions import InteractionStore
from feedback.models import Interaction
from tests.feedback.helpers import add_interaction


async def test_an_answer_starts_with_its_row_whole_after_a_read_that_rolled_back(db: Database) -> None:
    """The first answer of a new deployment bootstraps the initial release inside this transaction, and two
    workers may race to (the loser rolls back, which expires every row of the session): the row must still be
    readable once the session is closed, and the attempt counted once."""
    interaction_id = await add_interaction(db, status="pending", answer="")

    async def racing_bootstrap(session: AsyncSession, row: Interaction) -> str:
        await session.rollback()
        return "read"

    begun = await InteractionStore(db, user_salt="salt").start_answer(interaction_id, pairs=2, also=racing_bootstrap)
    assert begun is not None and begun.extra == "read"
    assert begun.row.question == "whats the per diem in the US" and begun.row.delivery in (None, {})
    assert begun.row.attempts == 1
    assert await InteractionStore(db, user_salt="salt").start_answer(interaction_id, pairs=2, also=racing_bootstrap) is not None
    async with db.asession() as session:
        row = await session.get(Interaction, interaction_id)
        assert row is not None and row.attempts == 2
