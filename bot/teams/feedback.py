"""Feedback on a Teams answer: card actions (👍 / 👎 / reason / "Ask a human") and message reactions.

Every path ends in :meth:`feedback.votes.Votes.vote` (record the vote, then score the answer's trace) or
:meth:`feedback.votes.Votes.escalate` — one label per (answer, user); answers are read through
:class:`feedback.interactions.InteractionStore`. A card action names its answer by interaction id; the answer
must belong to the conversation the action came from, so a crafted payload cannot vote on someone else's answer.
A reaction names the message it was added to (``replyToId``), which is the answer's activity id (the
placeholder, updated in place).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.core.log import get_logger
from bot.core.types import Answer, Platform, Source, Status
from bot.teams.cards import DATA_KEY, CardState, Verb
from feedback.interactions import Interaction, InteractionStore
from feedback.votes import DOWN_REASONS, VoteError, Votes

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


async def load_interaction(interactions: InteractionStore, interaction_id: int, *,
                           channel: str) -> Interaction | None:
    """The Teams interaction with this id, if it was asked in ``channel``."""
    row = await interactions.get(interaction_id)
    if row is None or row.platform != Platform.TEAMS.value or row.channel != channel:
        return None
    return row


@dataclass
class ActionOutcome:
    row: Interaction
    state: CardState
    error: str | None = None


async def apply_card_action(interactions: InteractionStore, votes: Votes, action: CardAction, *, user: str,
                            channel: str) -> ActionOutcome | None:
    """Record what the action says; returns the card state to show, or None when the answer is unknown here."""
    row = await load_interaction(interactions, action.interaction_id, channel=channel)
    if row is None:
        log.warning("teams.feedback_unknown_answer", interaction_id=action.interaction_id)
        return None
    platform, iid = Platform.TEAMS.value, row.id
    assert iid is not None
    try:
        if action.verb == Verb.VOTE:
            if action.label not in ("up", "down"):
                return ActionOutcome(row, CardState.OPEN, error="unknown vote")
            await votes.vote(interaction_id=iid, user=user, platform=platform, label=action.label)
            return ActionOutcome(row, CardState.ASK_REASON if action.label == "down" else CardState.THANKS_UP)
        if action.verb == Verb.REASON:
            reason = action.reason if action.reason in DOWN_REASONS else "other"
            await votes.vote(interaction_id=iid, user=user, platform=platform, label="down", reason=reason,
                             comment=action.comment)
            return ActionOutcome(row, CardState.THANKS_DOWN)
        if action.verb == Verb.ESCALATE:
            await votes.escalate(interaction_id=iid, user=user, platform=platform)
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


async def find_by_message(interactions: InteractionStore, *, channel: str, message_id: str) -> Interaction | None:
    """The answer whose Teams message is ``message_id`` (searched among the channel's recent answers)."""
    for row in await interactions.recent_in_channel(Platform.TEAMS.value, channel, REACTION_LOOKBACK):
        if message_id in _message_ids(row):
            return row
    return None


async def apply_reactions(interactions: InteractionStore, votes: Votes, reactions: list[str], *, message_id: str,
                          user: str, channel: str) -> Interaction | None:
    """Record reactions added to an answer as votes; returns the interaction, or None if not an answer."""
    labels = [REACTION_LABELS[r] for r in reactions if r in REACTION_LABELS]
    if not labels or not message_id:
        return None
    row = await find_by_message(interactions, channel=channel, message_id=message_id)
    if row is None or row.id is None:
        log.info("teams.reaction_not_on_answer", message_id=message_id)
        return None
    await votes.vote(interaction_id=row.id, user=user, platform=Platform.TEAMS.value, label=labels[-1])
    return row
