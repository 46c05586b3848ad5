"""Recording 👍/👎 votes: one label per (interaction, user); a changed vote updates it, never counts twice."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import select

from bot.core.clock import utcnow
from bot.core.log import get_logger
from bot.pipeline import hash_user
from feedback.db import Database
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


async def record_vote(db: Database, *, interaction_id: int, user: str, platform: str, label: str,
                      reason: str | None = None, comment: str | None = None) -> VoteResult:
    if label not in LABELS:
        raise VoteError(f"label must be 'up' or 'down', not {label!r}")
    if reason is not None and reason not in DOWN_REASONS:
        raise VoteError(f"unknown reason {reason!r}")
    user_hash = hash_user(user)
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


async def mark_escalated(db: Database, *, interaction_id: int, user: str, platform: str) -> None:
    """Remember that someone asked a human about this answer (stored on their feedback row)."""
    user_hash = hash_user(user)
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
