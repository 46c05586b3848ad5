"""Learned answers in Teams: replies in an "Ask a human" thread of ``teams_support_channel`` → drafts, reviewed with
an Adaptive Card (question | reply side by side; Approve, Save edit & approve, Reject as ``Action.Execute``).
The workflow is :mod:`playbooks.learned`; this module only translates (docs/learned-answers.md).

- "Ask a human" starts the thread with ``create_conversation``: the thread's conversation id is
  ``<channel>;messageid=<root post id>`` (what Teams sends as ``conversation.id`` for every reply in it);
- a reply there that @mentions Deskmate (Teams delivers a bot only the channel messages that mention it) is the
  draft's text, the mention removed (:func:`on_support_reply`); a later one replaces it until it is reviewed;
- the review card is posted in the thread and refreshed by its own ``adaptiveCard/action`` invokes
  (:func:`on_review_action`); only a knowledge owner (``DESKMATE_KNOWLEDGE_OWNERS``, by Azure AD object id) or
  an admin may decide.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from botbuilder.core import CardFactory, TurnContext
from botbuilder.schema import Activity, ActivityTypes

from bot.core.log import get_logger
from bot.core.types import Platform
from bot.runtime import Runtime
from bot.teams.activities import channel_of, strip_mentions, user_of
from bot.teams.retry import describe
from feedback.learned import APPROVED, DRAFT, EXPIRED, ORIGIN_CORRECTION, ORIGIN_MARKED, REJECTED, LearnedAnswer
from playbooks.learned import DraftOutcome, ReviewRefused, citation_title

log = get_logger(__name__)

LEARNED_KEY = "deskmate_learned"  # a review action's data: {"deskmate_learned": approve|edit|reject, "lid": id}
TEXT_INPUT = "learned_text"
TEAMS = Platform.TEAMS.value
CARD_TEXT_LIMIT = 3000


def thread_id(support_channel: str, response: Any) -> str:
    """The conversation id of the thread ``create_conversation`` started (``<channel>;messageid=<root id>``)."""
    created = str(getattr(response, "id", "") or "")
    if ";messageid=" in created:
        return created
    activity_id = str(getattr(response, "activity_id", "") or "")
    return f"{support_channel};messageid={activity_id}" if activity_id else ""


def thread_link(support_channel: str, root_id: str, tenant: str) -> str:
    """Teams' deep link to a channel post."""
    query = urlencode({"tenantId": tenant, "parentMessageId": root_id}) if tenant else urlencode(
        {"parentMessageId": root_id})
    return f"https://teams.microsoft.com/l/message/{quote(support_channel, safe='')}/{root_id}?{query}"


def review_card(row: LearnedAnswer, team: str, *, notice: str | None = None) -> dict[str, Any]:
    origin = {ORIGIN_MARKED: "the message marked as the answer", ORIGIN_CORRECTION: "a 👎 correction"}.get(
        row.origin, "the reply in this thread")
    status = {
        DRAFT: f"💡 **Draft learned answer #{row.id}** — from {origin}. A knowledge owner of "
               f"**{row.knowledge_set}** can approve, edit or reject it; until then it is never used.",
        APPROVED: f"✅ **Learned answer #{row.id} approved**" + (" (edited)" if row.edited else "")
                  + f" — Deskmate now cites it as “{citation_title(team, row.answered_at)}”"
                  + (f" until {row.review_by:%d %b %Y}" if row.review_by else "") + ".",
        REJECTED: f"🚫 **Learned answer #{row.id} rejected.**",
        EXPIRED: f"⌛ **Learned answer #{row.id} is due for review** — out of the answers until approved again.",
    }.get(row.status, f"Learned answer #{row.id}: {row.status}")
    visibility = "public channels too" if row.public else "restricted: personal chats, group chats and private use"
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": status, "wrap": True},
        {"type": "ColumnSet", "columns": [
            {"type": "Column", "width": "stretch", "items": [
                {"type": "TextBlock", "text": "**Question**", "wrap": True},
                {"type": "TextBlock", "text": row.question[:CARD_TEXT_LIMIT], "wrap": True}]},
            {"type": "Column", "width": "stretch", "items": [
                {"type": "TextBlock", "text": f"**Answer by {row.answered_by or 'someone'}**", "wrap": True},
                {"type": "TextBlock", "text": row.answer[:CARD_TEXT_LIMIT], "wrap": True}]},
        ]},
        {"type": "TextBlock", "text": f"Knowledge set {row.knowledge_set} · {visibility}", "wrap": True,
         "isSubtle": True, "size": "Small"},
    ]
    if notice:
        body.append({"type": "TextBlock", "text": notice, "wrap": True, "color": "Attention", "size": "Small"})
    actions: list[dict[str, Any]] = []
    if row.status in (DRAFT, EXPIRED):
        body.append({"type": "Input.Text", "id": TEXT_INPUT, "isMultiline": True, "label": "Edit the answer",
                     "value": row.answer[:CARD_TEXT_LIMIT], "maxLength": CARD_TEXT_LIMIT})

        def execute(title: str, decision: str, style: str | None = None) -> dict[str, Any]:
            data = {LEARNED_KEY: decision, "lid": row.id}
            action: dict[str, Any] = {"type": "Action.Execute", "title": title, "verb": f"deskmate.learned.{decision}",
                                      "data": data}
            if style:
                action["style"] = style
            return action

        actions = [execute("Approve", "approve", "positive"), execute("Save edit & approve", "edit"),
                   execute("Reject", "reject", "destructive")]
    card: dict[str, Any] = {"type": "AdaptiveCard", "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                            "version": "1.5", "body": body}
    if actions:
        card["actions"] = actions
    return card


def card_activity(card: dict[str, Any], activity_id: str | None = None) -> Activity:
    activity = Activity(type=ActivityTypes.message, attachments=[CardFactory.adaptive_card(card)])
    if activity_id:
        activity.id = activity_id
    return activity


def parse_review_action(data: Any) -> tuple[str, int, str | None] | None:
    """(decision, learned id, edited text) of a review card's action, or None when it is not one."""
    if not isinstance(data, dict) or LEARNED_KEY not in data:
        return None
    decision = str(data.get(LEARNED_KEY))
    try:
        learned_id = int(data["lid"])
    except (KeyError, TypeError, ValueError):
        return None
    if decision not in ("approve", "edit", "reject"):
        return None
    text = data.get(TEXT_INPUT)
    return decision, learned_id, str(text) if isinstance(text, str) else None


async def record_escalation(rt: Runtime, *, interaction_id: int, support_channel: str, response: Any,
                            tenant: str) -> None:
    """"Ask a human" started a thread in the support channel: follow it."""
    thread = thread_id(support_channel, response)
    root = thread.split(";messageid=", 1)[1] if ";messageid=" in thread else ""
    await rt.learned.escalated(interaction_id=interaction_id, platform=TEAMS, support_channel=support_channel,
                               support_thread=thread,
                               thread_url=thread_link(support_channel, root, tenant) if root else None)


async def show_review(rt: Runtime, turn_context: TurnContext, outcome: DraftOutcome) -> None:
    """Post a new draft's review card in the thread (this turn's conversation), or refresh the one posted."""
    row = outcome.draft
    card = review_card(row, rt.learned.team(row.knowledge_set))
    where = row.review_message or {}
    if where.get("activity_id"):
        try:
            await turn_context.update_activity(card_activity(card, str(where["activity_id"])))
            return
        except Exception as exc:  # noqa: BLE001 - post a fresh card instead
            log.warning("teams.learned_review_update_failed", error=describe(exc))
    try:
        response = await turn_context.send_activity(card_activity(card))
    except Exception as exc:  # noqa: BLE001 - the draft waits in the dashboard
        log.warning("teams.learned_review_post_failed", error=describe(exc))
        return
    activity_id = getattr(response, "id", None)
    if activity_id and row.id is not None:
        conversation = turn_context.activity.conversation.id if turn_context.activity.conversation else ""
        await rt.learned.set_review_message(row.id, {"conversation": conversation, "activity_id": activity_id})


async def on_support_reply(rt: Runtime, turn_context: TurnContext) -> bool:
    """A message in a support-channel thread: True when it was an escalation thread's (a draft made or changed,
    nothing to answer); False for anything else (a question)."""
    activity = turn_context.activity
    support = rt.settings.teams_support_channel
    conversation = activity.conversation.id if activity.conversation else ""
    if not support or not rt.learned.enabled or channel_of(activity) != support or ";messageid=" not in conversation:
        return False
    if await rt.learned.escalation_for_thread(TEAMS, support, conversation) is None:
        return False
    sender = activity.from_property
    outcome = await rt.learned.support_reply(
        platform=TEAMS, support_channel=support, thread=conversation, text=strip_mentions(activity),
        author_id=user_of(activity), author_name=(sender.name if sender else "") or "", message_id=activity.id or "")
    if outcome is not None:
        await show_review(rt, turn_context, outcome)
    return True


async def on_review_action(rt: Runtime, turn_context: TurnContext, data: Any) -> dict[str, Any] | None:
    """A review card's ``Action.Execute``: the refreshed card, or None when the data is not a review action."""
    parsed = parse_review_action(data)
    if parsed is None:
        return None
    decision, learned_id, text = parsed
    reviewer = user_of(turn_context.activity)
    learned = rt.learned
    try:
        if decision == "reject":
            row = await learned.reject(learned_id, reviewer)
        else:
            row = await learned.approve(learned_id, reviewer, text=text if decision == "edit" else None)
    except ReviewRefused as exc:
        current = await learned.get(learned_id)
        if current is None:
            return {"type": "AdaptiveCard", "version": "1.5", "body": [{"type": "TextBlock", "text": str(exc)}]}
        return review_card(current, learned.team(current.knowledge_set), notice=str(exc))
    return review_card(row, learned.team(row.knowledge_set))


async def on_correction(rt: Runtime, turn_context: TurnContext, *, interaction_id: int, comment: str | None) -> None:
    """A 👎 with a comment: a knowledge owner's correction becomes a draft, its review card posted in the
    conversation the correction was given in (and listed in the dashboard)."""
    if not comment:
        return
    sender = turn_context.activity.from_property
    outcome = await rt.learned.correction(interaction_id=interaction_id, user_id=user_of(turn_context.activity),
                                          user_name=(sender.name if sender else "") or "", comment=comment)
    if outcome is not None:
        await show_review(rt, turn_context, outcome)
