"""Feedback on a Teams answer: card actions (👍 / 👎 / reason / "Ask a human") and message reactions.

Every path ends in :func:`feedback.votes.record_vote` or :func:`feedback.votes.mark_escalated` — one label per
(answer, user). A card action names its answer by interaction id; the answer must belong to the conversation the
action came from, so a crafted payload cannot vote on someone else's answer. A reaction names the message it
was added to (``replyToId``), which is the answer's activity id (the placeholder, updated in place).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import col, select

from bot.core.log import get_logger
from bot.core.types import Answer, Platform, Source, Status
from bot.teams.cards import DATA_KEY, CardState, Verb
from feedback.db import Database
from feedback.langfuse_sync import send_vote_score
from feedback.models import Interaction
from feedback.votes import DOWN_REASONS, VoteError, VoteResult, mark_escalated, record_vote

log = get_logger(__name__)

#: Teams reaction types → vote labels (surprised / laugh say nothing about correctness).
REACTION_LABELS = {"like": "up", "heart": "up", "sad": "down", "angry": "down"}
#: How many recent answers in a conversation are searched for the message a reaction refers to.
REACTION_LOOKBACK = 500


@dataclass
class CardAction:
    verb: Verb
    interaction_id: int
    label: str | None = None
    reason: str | None = None
    comment: str | None = None


def parse_card_action(data: Any) -> CardAction | None:
    """The Deskmate action in an ``Action.Execute`` / ``Action.Submit`` data object, or None if it isn't one."""
    if not isinstance(data, dict) or DATA_KEY not in data:
        return None
    try:
        verb = Verb(str(data[DATA_KEY]))
        interaction_id = int(data["iid"])
    except (KeyError, ValueError, TypeError):
        return None
    label = data.get("label")
    reason = data.get("reason") or None
    comment = str(data.get("comment") or "").strip() or None
    return CardAction(verb, interaction_id, label=str(label) if label else None,
                      reason=str(reason) if reason else None, comment=comment)


def answer_from_row(row: Interaction) -> Answer:
    """Rebuild the answer a card shows from the recorded interaction (to refresh the card)."""
    try:
        status = Status(row.status)
    except ValueError:
        status = Status.ERROR
    return Answer(interaction_id=row.id, text=row.answer or "", status=status, fallback=row.fallback,
                  fallback_reason=row.fallback_reason, release=row.release, model=row.model,
                  sources=[Source.model_validate(s) for s in row.sources or []])


async def load_interaction(db: Database, interaction_id: int, *, channel: str) -> Interaction | None:
    """The Teams interaction with this id, if it was asked in ``channel``."""
    async with db.asession() as session:
        row = await session.get(Interaction, interaction_id)
    if row is None or row.platform != Platform.TEAMS.value or row.channel != channel:
        return None
    return row


@dataclass
class ActionOutcome:
    row: Interaction
    state: CardState
    error: str | None = None


def _score(tracer: Any, result: VoteResult) -> None:
    """The vote as the Langfuse ``user_feedback`` score of the answer's trace (no-op without Langfuse)."""
    try:
        send_vote_score(tracer, trace_id=result.trace_id, label=result.feedback.label, reason=result.feedback.reason,
                        feedback_id=result.feedback.id)
    except Exception as exc:  # noqa: BLE001 - the vote is recorded; tracing must not fail the click
        log.warning("teams.feedback_score_failed", error=str(exc))


async def apply_card_action(db: Database, action: CardAction, *, user: str, channel: str,
                            tracer: Any = None) -> ActionOutcome | None:
    """Record what the action says; returns the card state to show, or None when the answer is unknown here."""
    row = await load_interaction(db, action.interaction_id, channel=channel)
    if row is None:
        log.warning("teams.feedback_unknown_answer", interaction_id=action.interaction_id)
        return None
    platform, iid = Platform.TEAMS.value, row.id
    assert iid is not None
    try:
        if action.verb == Verb.VOTE:
            if action.label not in ("up", "down"):
                return ActionOutcome(row, CardState.OPEN, error="unknown vote")
            _score(tracer, await record_vote(db, interaction_id=iid, user=user, platform=platform, label=action.label))
            return ActionOutcome(row, CardState.ASK_REASON if action.label == "down" else CardState.THANKS_UP)
        if action.verb == Verb.REASON:
            reason = action.reason if action.reason in DOWN_REASONS else "other"
            _score(tracer, await record_vote(db, interaction_id=iid, user=user, platform=platform, label="down",
                                             reason=reason, comment=action.comment))
            return ActionOutcome(row, CardState.THANKS_DOWN)
        if action.verb == Verb.ESCALATE:
            await mark_escalated(db, interaction_id=iid, user=user, platform=platform)
            return ActionOutcome(row, CardState.ESCALATED)
    except VoteError as exc:
        log.warning("teams.feedback_refused", error=str(exc))
        return ActionOutcome(row, CardState.OPEN, error=str(exc))
    return None


def _message_ids(row: Interaction) -> set[str]:
    ids = {str((row.question_payload.get("reply_target") or {}).get("placeholder_id") or "")}
    ids.add(str((row.delivery or {}).get("activity_id") or ""))
    ids.discard("")
    return ids


async def find_by_message(db: Database, *, channel: str, message_id: str) -> Interaction | None:
    """The answer whose Teams message is ``message_id`` (searched among the channel's recent answers)."""
    async with db.asession() as session:
        stmt = (select(Interaction)
                .where(Interaction.platform == Platform.TEAMS.value, Interaction.channel == channel)
                .order_by(col(Interaction.id).desc()).limit(REACTION_LOOKBACK))
        rows = list((await session.exec(stmt)).all())
    for row in rows:
        if message_id in _message_ids(row):
            return row
    return None


async def apply_reactions(db: Database, reactions: list[str], *, message_id: str, user: str, channel: str,
                          tracer: Any = None) -> Interaction | None:
    """Record reactions added to an answer as votes; returns the interaction, or None if not an answer."""
    labels = [REACTION_LABELS[r] for r in reactions if r in REACTION_LABELS]
    if not labels or not message_id:
        return None
    row = await find_by_message(db, channel=channel, message_id=message_id)
    if row is None or row.id is None:
        log.info("teams.reaction_not_on_answer", message_id=message_id)
        return None
    _score(tracer, await record_vote(db, interaction_id=row.id, user=user, platform=Platform.TEAMS.value,
                                     label=labels[-1]))
    return row
