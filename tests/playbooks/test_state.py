"""What an answer starts under (playbooks/state.py): read once per process, re-read when another process changes it.

Two ``PlaybookState`` objects stand for two worker processes; the changes are made the way operators make them
(set_mode, set_policy, activate) on another session, as another process would.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from bot.core.settings import Settings
from bot.core.types import Platform, Question
from playbooks.channel_policy import set_policy
from playbooks.killswitch import GLOBAL_SCOPE, Mode, channel_scope, set_mode
from playbooks.releases import activate, create_release
from playbooks.state import PlaybookState


def question(channel: str = "C1", channel_type: str = "im") -> Question:
    return Question(idempotency_key=f"t:{uuid.uuid4().hex}", platform=Platform.SLACK, workspace="T1",
                    channel=channel, thread="", user="U1", text="How do I book travel?", channel_type=channel_type)


async def read(state: PlaybookState, db: Any, q: Question) -> Any:
    async with db.asession() as session:
        return await state.read(session, q)


async def test_a_switch_set_elsewhere_is_obeyed_by_the_next_answer_of_every_process(
        database: Any, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    one, two = PlaybookState(settings), PlaybookState(settings)
    assert (await read(one, database, question())).mode is Mode.ON
    assert (await read(two, database, question())).mode is Mode.ON
    async with database.asession() as session:
        await set_mode(session, channel_scope("slack", "C1"), Mode.OFF, actor="ops", reason="incident")
    for state in (one, two):
        got = await read(state, database, question("C1"))
        assert (got.mode, got.switch_reason) == (Mode.OFF, "incident")
        assert (await read(state, database, question("C2"))).mode is Mode.ON  # another channel is answered
    async with database.asession() as session:
        await set_mode(session, GLOBAL_SCOPE, Mode.RETRIEVAL_ONLY, actor="ops")
        await set_mode(session, channel_scope("slack", "C1"), Mode.ON, actor="ops")
    assert (await read(one, database, question("C1"))).mode is Mode.RETRIEVAL_ONLY
    assert (await read(two, database, question("C2"))).mode is Mode.RETRIEVAL_ONLY


async def test_a_promotion_elsewhere_changes_the_answering_release_at_the_next_answer(
        database: Any, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    state = PlaybookState(settings)
    assert (await read(state, database, question())).release.name == "initial"
    async with database.asession() as session:
        await create_release(session, settings, "r2", actor="ops", retrieval_k=3)
    assert (await read(state, database, question())).release.name == "initial"  # created, not active
    async with database.asession() as session:
        await activate(session, settings, "r2", actor="ops", action="promote")
    got = await read(state, database, question())
    assert (got.release.name, got.release.retrieval_k) == ("r2", 3)
    async with database.asession() as session:
        await activate(session, settings, "initial", actor="ops", action="rollback")
    assert (await read(state, database, question())).release.name == "initial"


async def test_a_channel_policy_changed_elsewhere_is_applied_at_the_channels_next_answer(
        database: Any, make_settings: Callable[..., Settings]) -> None:
    state = PlaybookState(make_settings())
    before = await read(state, database, question("CPUB", channel_type="channel"))
    assert before.policy.enabled and before.policy.search_filter.public_only  # a public channel's default
    async with database.asession() as session:
        await set_policy(session, "slack", "CPUB", public_only=False, knowledge_sets=["hr"])
    after = await read(state, database, question("CPUB", channel_type="channel"))
    assert not after.policy.search_filter.public_only and after.policy.search_filter.knowledge_sets == ["hr"]
    async with database.asession() as session:
        await set_policy(session, "slack", "CPUB", enabled=False)  # the same row changed again
    assert not (await read(state, database, question("CPUB", channel_type="channel"))).policy.enabled
