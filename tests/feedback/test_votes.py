"""A vote is a label: one per (answer, user); a change of vote updates it; Langfuse gets it as a score."""

from __future__ import annotations

import pytest
from sqlmodel import select

from bot.core.settings import Settings
from bot.tracing import FEEDBACK_SCORE, Tracer
from feedback.db import Database
from feedback.export import labelled_rows
from feedback.langfuse_sync import score_id, send_vote_score
from feedback.models import Feedback
from feedback.votes import VoteError, Votes
from tests.fakes.langfuse_server import start_fake_langfuse
from tests.feedback.helpers import add_interaction


async def feedback_rows(db: Database) -> list[Feedback]:
    async with db.asession() as session:
        return list((await session.exec(select(Feedback))).all())


async def test_vote_is_recorded_with_a_hashed_user(db: Database) -> None:
    iid = await add_interaction(db)
    result = await Votes(db, user_salt="test-salt").vote(interaction_id=iid, user="U123", platform="slack", label="up")
    assert result.changed is False
    [row] = await feedback_rows(db)
    assert (row.label, row.platform, row.interaction_id) == ("up", "slack", iid)
    assert row.user_hash and "U123" not in row.user_hash


async def test_change_of_vote_updates_the_label_and_is_not_counted_twice(db: Database) -> None:
    iid = await add_interaction(db)
    await Votes(db, user_salt="test-salt").vote(interaction_id=iid, user="U1", platform="slack", label="down", reason="wrong")
    changed = await Votes(db, user_salt="test-salt").vote(interaction_id=iid, user="U1", platform="slack", label="up")
    assert changed.changed is True
    [row] = await feedback_rows(db)
    assert (row.label, row.reason) == ("up", None), "the reason given for 👎 no longer applies to 👍"
    await Votes(db, user_salt="test-salt").vote(interaction_id=iid, user="U2", platform="slack", label="down", reason="outdated")
    rows = await labelled_rows(db)
    assert sorted((r["label"], r["reason"]) for r in rows) == [("down", "outdated"), ("up", None)]


async def test_escalation_without_a_vote_is_not_a_label(db: Database) -> None:
    iid = await add_interaction(db)
    await Votes(db, user_salt="test-salt").escalate(interaction_id=iid, user="U1", platform="slack")
    assert await labelled_rows(db) == []


async def test_bad_votes_are_refused(db: Database) -> None:
    iid = await add_interaction(db)
    with pytest.raises(VoteError):
        await Votes(db, user_salt="test-salt").vote(interaction_id=iid, user="U1", platform="slack", label="meh")
    with pytest.raises(VoteError):
        await Votes(db, user_salt="test-salt").vote(interaction_id=iid, user="U1", platform="slack", label="down", reason="because")
    with pytest.raises(VoteError):
        await Votes(db, user_salt="test-salt").vote(interaction_id=iid + 999, user="U1", platform="slack", label="up")


async def test_vote_becomes_a_score_on_the_answers_trace(make_settings, db: Database) -> None:
    with start_fake_langfuse() as fake:
        settings: Settings = make_settings(langfuse_public_key=fake.public_key, langfuse_secret_key=fake.secret_key,
                                           langfuse_host=fake.url)
        tracer = Tracer(settings)
        try:
            trace_id = "a" * 32
            iid = await add_interaction(db, trace_id=trace_id)
            result = await Votes(db, user_salt="test-salt").vote(interaction_id=iid, user="U1", platform="slack", label="down",
                                       reason="outdated")
            assert send_vote_score(tracer, trace_id=result.trace_id, label=result.feedback.label,
                                   reason=result.feedback.reason, feedback_id=result.feedback.id)
            tracer.flush()
        finally:
            tracer.shutdown()
        [score] = fake.scores
        assert (score["name"], score["value"], score["traceId"], score["comment"]) == (
            FEEDBACK_SCORE, 0.0, trace_id, "outdated")
        if "score_id" in Tracer.score.__code__.co_varnames:  # a stable id once the tracer supports it
            assert score["id"] == score_id(result.feedback.id, trace_id)


def test_no_score_without_tracer_or_trace() -> None:
    assert send_vote_score(None, trace_id="a" * 32, label="up") is False

    class Off:
        enabled = False

        def score(self, **kwargs):  # pragma: no cover - must not be called
            raise AssertionError

    assert send_vote_score(Off(), trace_id="a" * 32, label="up") is False
