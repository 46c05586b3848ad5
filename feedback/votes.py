"""The one vote path: 👍/👎 and "Ask a human", from every chat surface.

:class:`Votes` records one label per (interaction, user) — a changed vote updates it, never counts twice — and
then sends the vote as the ``user_feedback`` score on the answer's trace (when tracing is on). Slack, Teams and
the local chat all call :meth:`Votes.vote` and :meth:`Votes.escalate`; none of them touches the tables.

Example::

    votes = Votes(db, user_salt=settings.user_hash_salt, scores=tracer)
    result = await votes.vote(interaction_id=42, user="U123", platform="slack", label="down", reason="outdated")
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlmodel import select

from bot.core.clock import utcnow
from bot.core.log import get_logger
from bot.core.identity import hash_user
from feedback.db import Database
from feedback.langfuse_sync import ScoreSink, send_vote_score
from feedback.models import Feedback, Interaction

log = get_logger(__name__)

LABELS = ("up", "down")
#: Reasons offered when someone votes 👎 (Slack modal, Teams card, local chat).
DOWN_REASONS: dict[str, str] = {
    "wrong": "The answer is wrong",
    "outdated": "The information is outdated",
    "incomplete": "It doesn't answer my question fully",
    "bad_sources": "The sources don't support it",
    "not_relevant": "Not what I asked",
    "other": "Something else",
}


class VoteError(ValueError):
    pass


@dataclass
class VoteResult:
    feedback: Feedback
    changed: bool  # an existing vote by this user was updated
    trace_id: str | None


async def _store_vote(db: Database, *, interaction_id: int, user: str, platform: str, label: str,
                      user_salt: str, reason: str | None = None, comment: str | None = None) -> VoteResult:
    if label not in LABELS:
        raise VoteError(f"label must be 'up' or 'down', not {label!r}")
    if reason is not None and reason not in DOWN_REASONS:
        raise VoteError(f"unknown reason {reason!r}")
    user_hash = hash_user(user, user_salt)
    async with db.asession() as session:
        interaction = await session.get(Interaction, interaction_id)
        if interaction is None:
            raise VoteError(f"no answer with id {interaction_id}")
        stmt = select(Feedback).where(Feedback.interaction_id == interaction_id, Feedback.user_hash == user_hash)
        row = (await session.exec(stmt)).first()
        changed = row is not None
        if row is None:
            row = Feedback(interaction_id=interaction_id, user_hash=user_hash, platform=platform, label=label)
        if changed and row.label != label:
            row.reason, row.comment = None, None  # a reason given for the old label no longer applies
        row.label = label
        if reason is not None:
            row.reason = reason
        if comment:
            row.comment = comment[:2000]
        row.updated_at = utcnow()
        session.add(row)
        await session.commit()
        await session.refresh(row)
        log.info("feedback.vote", interaction_id=interaction_id, label=label, changed=changed, reason=row.reason)
        return VoteResult(row, changed, interaction.trace_id)


async def _store_escalation(db: Database, *, interaction_id: int, user: str, platform: str, user_salt: str) -> None:
    """Remember that someone asked a human about this answer (stored on their feedback row)."""
    user_hash = hash_user(user, user_salt)
    async with db.asession() as session:
        stmt = select(Feedback).where(Feedback.interaction_id == interaction_id, Feedback.user_hash == user_hash)
        row = (await session.exec(stmt)).first()
        if row is None:
            # no vote: label "none" so that escalations do not count as 👎 in rates
            row = Feedback(interaction_id=interaction_id, user_hash=user_hash, platform=platform, label="none")
        row.escalated = True
        row.updated_at = utcnow()
        session.add(row)
        await session.commit()


#: Runs after each recorded vote with the interaction's id (the bot: a canary's decision); never fails the vote.
AfterVote = Callable[[int], Awaitable[object]]


class Votes:
    """Record a vote, then score its trace: the one path every chat surface uses."""

    def __init__(self, db: Database, *, user_salt: str, scores: ScoreSink | None = None,
                 after_vote: AfterVote | None = None) -> None:
        self.db = db
        self.user_salt = user_salt
        self.scores = scores
        self.after_vote = after_vote

    async def vote(self, *, interaction_id: int, user: str, platform: str, label: str, reason: str | None = None,
                   comment: str | None = None) -> VoteResult:
        """Raises :class:`VoteError` for an unknown label, reason or interaction."""
        result = await _store_vote(self.db, interaction_id=interaction_id, user=user, platform=platform,
                                   label=label, user_salt=self.user_salt, reason=reason, comment=comment)
        send_vote_score(self.scores, trace_id=result.trace_id, label=result.feedback.label,
                        reason=result.feedback.reason, feedback_id=result.feedback.id)
        if self.after_vote is not None:
            try:
                await self.after_vote(interaction_id)
            except Exception:  # noqa: BLE001 - the vote is recorded; what follows it must not undo that
                log.exception("feedback.after_vote_failed", interaction_id=interaction_id)
        return result

    async def escalate(self, *, interaction_id: int, user: str, platform: str) -> None:
        """Remember that ``user`` asked a human about this answer."""
        await _store_escalation(self.db, interaction_id=interaction_id, user=user, platform=platform,
                             user_salt=self.user_salt)
