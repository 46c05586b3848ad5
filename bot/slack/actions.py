"""Clicks on an answer's buttons and the 👎 modal → votes and escalations (through :class:`feedback.votes.Votes`).

👍 records an "up" vote. 👎 records a "down" vote at once (closing the modal still counts) and opens a modal
asking what was wrong; its submission adds the reason and comment to the same row. "Ask a human" posts the
question and the answer to ``slack_support_channel`` and marks the feedback row as escalated. Every handler
acks first: ``views.open`` needs the click's ``trigger_id`` within 3 seconds.

The escalation carries text from outside (the user's question, the model's answer): it is built with
:mod:`bot.slack.mrkdwn` like every other message, so a ``<!channel>`` in either reaches the support channel as
text, never as a mention; the only mentions in it are Deskmate's own (the person who clicked, the channel).
"""

from __future__ import annotations

import json
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError

from bot.core.log import get_logger
from bot.core.types import Platform, Question
from bot.slack.adapter import SlackAdapter
from bot.slack.learned import on_correction, record_escalation
from bot.slack.mrkdwn import channel_mention, escape, link, markdown_to_mrkdwn, truncate, user_mention
from bot.slack.rendering import (
    COMMENT_BLOCK,
    ESCALATE,
    FEEDBACK_VIEW,
    REASON_BLOCK,
    SECTION_LIMIT,
    VOTE_DOWN,
    VOTE_UP,
    feedback_modal,
)
from bot.status_text import (
    NO_SUPPORT_CHANNEL,
    SUPPORT_UNREACHABLE,
    VOTE_DOWN_THANKS,
    VOTE_UP_THANKS,
    escalated,
)
from feedback.votes import DOWN_REASONS, VoteError

log = get_logger(__name__)

ESCALATION_ANSWER_CHARS = 1500
ESCALATION_TEXT_LIMIT = 4000


def interaction_id_of(action: dict[str, Any]) -> int | None:
    try:
        return int(str(action.get("value", "")).strip())
    except ValueError:
        return None


async def _respond(respond: AsyncRespond, text: str) -> None:
    try:
        await respond(text=text, response_type="ephemeral", replace_original=False)
    except Exception as exc:  # noqa: BLE001 - the vote is stored; the thank-you is a nicety
        log.info("slack.respond_failed", error=str(exc))


async def vote(adapter: SlackAdapter, body: dict[str, Any], label: str, *, reason: str | None = None,
               comment: str | None = None, interaction_id: int | None = None) -> bool:
    action = (body.get("actions") or [{}])[0]
    interaction_id = interaction_id if interaction_id is not None else interaction_id_of(action)
    user = (body.get("user") or {}).get("id", "")
    if interaction_id is None or not user:
        log.warning("slack.vote_without_interaction", action=action.get("action_id"))
        return False
    try:
        await adapter.rt.votes.vote(interaction_id=interaction_id, user=user, platform=Platform.SLACK.value,
                                    label=label, reason=reason, comment=comment)
    except VoteError as exc:
        log.warning("slack.vote_refused", error=str(exc), interaction_id=interaction_id)
        return False
    return True


async def on_vote_up(adapter: SlackAdapter, body: dict[str, Any], respond: AsyncRespond) -> None:
    if await vote(adapter, body, "up"):
        await _respond(respond, f":+1: {VOTE_UP_THANKS}")


async def on_vote_down(adapter: SlackAdapter, body: dict[str, Any], respond: AsyncRespond) -> None:
    action = (body.get("actions") or [{}])[0]
    interaction_id = interaction_id_of(action)
    if interaction_id is None:
        return
    container = body.get("container") or {}
    try:
        await adapter.client.views_open(trigger_id=body["trigger_id"], view=feedback_modal(
            interaction_id, channel=container.get("channel_id", ""), message_ts=container.get("message_ts", "")))
    except (SlackApiError, KeyError) as exc:
        log.warning("slack.modal_failed", error=str(exc))
        await vote(adapter, body, "down")
        await _respond(respond, f":-1: {VOTE_DOWN_THANKS}")
        return
    await vote(adapter, body, "down")


def _modal_values(view: dict[str, Any]) -> tuple[str | None, str | None]:
    values = (view.get("state") or {}).get("values") or {}
    selected = ((values.get(REASON_BLOCK) or {}).get(REASON_BLOCK) or {}).get("selected_option") or {}
    reason = selected.get("value")
    comment = ((values.get(COMMENT_BLOCK) or {}).get(COMMENT_BLOCK) or {}).get("value")
    return (reason if reason in DOWN_REASONS else None), (comment.strip() if comment else None) or None


async def on_feedback_submitted(adapter: SlackAdapter, body: dict[str, Any], view: dict[str, Any]) -> None:
    try:
        metadata = json.loads(view.get("private_metadata") or "{}")
        interaction_id = int(metadata["interaction_id"])
    except (ValueError, KeyError, TypeError):
        log.warning("slack.modal_without_interaction")
        return
    reason, comment = _modal_values(view)
    if await vote(adapter, body, "down", reason=reason, comment=comment, interaction_id=interaction_id):
        # a knowledge owner's correction becomes a draft learned answer (docs/learned-answers.md)
        await on_correction(adapter, interaction_id=interaction_id, user=(body.get("user") or {}).get("id", ""),
                            comment=comment)


async def on_escalate(adapter: SlackAdapter, body: dict[str, Any], respond: AsyncRespond) -> None:
    settings = adapter.settings
    action = (body.get("actions") or [{}])[0]
    interaction_id = interaction_id_of(action)
    clicker = (body.get("user") or {}).get("id", "")
    if interaction_id is None:
        return
    if not settings.slack_support_channel:
        await _respond(respond, NO_SUPPORT_CHANNEL)
        return
    row = await adapter.rt.interactions.get(interaction_id)
    if row is None:
        return
    question = Question.model_validate(row.question_payload)
    container = body.get("container") or {}
    permalink = None
    if container.get("message_ts") and not container.get("is_ephemeral"):
        try:
            response = await adapter.client.chat_getPermalink(channel=container.get("channel_id", question.channel),
                                                              message_ts=container["message_ts"])
            permalink = response.get("permalink")
        except SlackApiError:
            pass
    where = f" in {channel_mention(question.channel)}" if question.channel and not question.channel.startswith("D") \
        else ""
    answer = truncate(markdown_to_mrkdwn(row.answer or ""), ESCALATION_ANSWER_CHARS)
    lines = [f":raising_hand: {user_mention(clicker)} would like a human to answer this question{where}:",
             f"*Question:* {escape(question.text)}", f"*Deskmate answered:*\n{answer or '_(nothing yet)_'}"]
    if permalink:
        lines.append(link(permalink, "Open the conversation"))
    text = "\n".join(lines)
    posted = await adapter.post(settings.slack_support_channel, text=truncate(text, ESCALATION_TEXT_LIMIT),
                                blocks=[{"type": "section", "text": {"type": "mrkdwn",
                                                                     "text": truncate(text, SECTION_LIMIT)}}])
    await adapter.rt.votes.escalate(interaction_id=interaction_id, user=clicker, platform=Platform.SLACK.value)
    if posted:
        await record_escalation(adapter, interaction_id=interaction_id, support_ts=posted)  # learned answers
        await _respond(respond, escalated(channel_mention(settings.slack_support_channel)))
    else:
        await _respond(respond, SUPPORT_UNREACHABLE)


def register(app: AsyncApp, adapter: SlackAdapter) -> None:
    async def vote_up(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await adapter.after_ack(on_vote_up(adapter, body, respond), "vote_up")

    async def vote_down(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await adapter.after_ack(on_vote_down(adapter, body, respond), "vote_down")

    async def escalate(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await adapter.after_ack(on_escalate(adapter, body, respond), "escalate")

    async def feedback_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        await ack()  # closes the modal
        await adapter.after_ack(on_feedback_submitted(adapter, body, view), "feedback_modal")

    app.action(VOTE_UP)(vote_up)
    app.action(VOTE_DOWN)(vote_down)
    app.action(ESCALATE)(escalate)
    app.view(FEEDBACK_VIEW)(feedback_submitted)

