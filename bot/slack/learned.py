"""Learned answers in Slack: support-thread replies, ✅ reactions and the "Use as answer" message shortcut → drafts;
the review prompt with Approve / Edit / Reject (:mod:`playbooks.learned` does the work, docs/learned-answers.md).

Translated here, nothing decided:

- a reply in the thread of an "Ask a human" post in ``slack_support_channel`` (``message`` event, from
  :func:`bot.slack.listeners.on_message`) → :meth:`LearnedAnswers.support_reply`;
- ``reaction_added`` ✅ (``white_check_mark``, ``heavy_check_mark``, ``ballot_box_with_check``) on a message of
  such a thread → the same, marked (the message is read with ``conversations.replies``);
- the message shortcut ``deskmate_use_as_answer`` on such a message → the same, marked;
- the review prompt's buttons (and the edit modal's submission) → approve / reject / approve with the edit.

The review prompt is posted in the support thread (a 👎 correction's at the top of the support channel) and
updated in place as the draft changes and when it is decided: question and reply side by side (section fields).
Every listener acknowledges first; the button handlers answer only a knowledge owner (or an admin) — anyone else
is told so, ephemerally.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.log import get_logger
from bot.core.types import Platform
from bot.slack.adapter import SlackAdapter
from bot.slack.client import ensure_session
from bot.slack.mrkdwn import escape, link, markdown_to_mrkdwn, truncate, user_mention
from bot.slack.rendering import context, plain
from feedback.learned import APPROVED, DRAFT, EXPIRED, ORIGIN_CORRECTION, ORIGIN_MARKED, REJECTED, LearnedAnswer
from playbooks.learned import DraftOutcome, ReviewRefused, citation_title

log = get_logger(__name__)

APPROVE, EDIT, REJECT = "deskmate_learned_approve", "deskmate_learned_edit", "deskmate_learned_reject"
EDIT_VIEW = "deskmate_learned_edit_view"
EDIT_BLOCK = "deskmate_learned_text"
USE_AS_ANSWER = "deskmate_use_as_answer"
CHECK_REACTIONS = frozenset({"white_check_mark", "heavy_check_mark", "ballot_box_with_check"})
FIELD_LIMIT = 1900  # a section field holds 2000 characters
SLACK = Platform.SLACK.value
MAX_REPLY_PAGES = 5


def review_message(row: LearnedAnswer, team: str, *, notice: str | None = None) -> dict[str, Any]:
    """The review prompt: status, question | reply side by side, where it would be cited, and the buttons while
    a decision is due."""
    who = user_mention(row.answered_by_id) if row.answered_by_id else escape(row.answered_by or "someone")
    origin = {ORIGIN_MARKED: "the message marked as the answer", ORIGIN_CORRECTION: "a 👎 correction"}.get(
        row.origin, "the reply in the thread")
    visibility = "public channels too" if row.public else "restricted: DMs and private channels only"
    status = {
        DRAFT: f":bulb: *Draft learned answer #{row.id}* — from {origin}. A knowledge owner of "
               f"*{escape(row.knowledge_set)}* can approve, edit or reject it; until then it is never used.",
        APPROVED: f":white_check_mark: *Learned answer #{row.id} approved* by {user_mention(row.reviewed_by)}"
                  + (" (edited)" if row.edited else "") + " — Deskmate now cites it as "
                  f"“{escape(citation_title(team, row.answered_at))}”"
                  + (f" until {row.review_by:%d %b %Y}" if row.review_by else "") + ".",
        REJECTED: f":no_entry_sign: *Learned answer #{row.id} rejected* by {user_mention(row.reviewed_by)}.",
        EXPIRED: f":hourglass: *Learned answer #{row.id} is due for review* — out of the answers until a knowledge "
                 "owner approves it again.",
    }.get(row.status, f"Learned answer #{row.id}: {row.status}")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": status}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": truncate(f"*Question*\n{escape(row.question)}", FIELD_LIMIT)},
            {"type": "mrkdwn", "text": truncate(f"*Answer by {who}*\n{markdown_to_mrkdwn(row.answer)}", FIELD_LIMIT)},
        ]},
        context(f"Knowledge set *{escape(row.knowledge_set)}* · {visibility}"
                + (f" · {link(row.thread_url, 'thread')}" if row.thread_url else "")),
    ]
    if notice:
        blocks.append(context(escape(notice)))
    if row.status in (DRAFT, EXPIRED):
        value = str(row.id)
        blocks.append({"type": "actions", "block_id": f"deskmate_learned_{row.id}", "elements": [
            {"type": "button", "action_id": APPROVE, "style": "primary", "text": plain("Approve"), "value": value},
            {"type": "button", "action_id": EDIT, "text": plain("Edit"), "value": value},
            {"type": "button", "action_id": REJECT, "style": "danger", "text": plain("Reject"), "value": value},
        ]})
    text = f"Learned answer #{row.id}: {row.status}"
    return {"text": text, "blocks": blocks}


def edit_modal(row: LearnedAnswer, *, channel: str, message_ts: str) -> dict[str, Any]:
    metadata = json.dumps({"learned_id": row.id, "channel": channel, "message_ts": message_ts})
    return {
        "type": "modal", "callback_id": EDIT_VIEW, "private_metadata": metadata,
        "title": plain("Edit the answer", 24), "submit": plain("Approve", 24), "close": plain("Cancel", 24),
        "blocks": [
            context(truncate(f"*Question:* {escape(row.question)}", 2900)),
            {"type": "input", "block_id": EDIT_BLOCK, "label": plain("Answer (Markdown)", 2000),
             "element": {"type": "plain_text_input", "action_id": EDIT_BLOCK, "multiline": True,
                         "max_length": 3000, "initial_value": row.answer[:3000]}},
        ],
    }


async def show_review(adapter: SlackAdapter, outcome: DraftOutcome, *, channel: str | None,
                      thread_ts: str | None) -> None:
    """Post the review prompt of a new draft (in ``thread_ts`` of ``channel``), or refresh the one posted."""
    row = outcome.draft
    team = adapter.rt.learned.team(row.knowledge_set)
    where = row.review_message or {}
    if where.get("ts") and where.get("channel"):
        try:
            await adapter.client.chat_update(channel=where["channel"], ts=where["ts"], **review_message(row, team))
            return
        except SlackApiError as exc:
            log.warning("slack.learned_review_update_failed", error=exc.response.get("error"))
    if not channel:
        return
    ts = await adapter.post(channel, thread_ts=thread_ts, **review_message(row, team))
    if ts and row.id is not None:
        await adapter.rt.learned.set_review_message(row.id, {"channel": channel, "ts": ts})


async def _permalink(adapter: SlackAdapter, channel: str, ts: str) -> str | None:
    try:
        response = await adapter.client.chat_getPermalink(channel=channel, message_ts=ts)
        return str(response.get("permalink") or "") or None
    except Exception as exc:  # noqa: BLE001 - the draft keeps the escalation's link
        log.info("slack.permalink_failed", error=repr(exc)[:200])
        return None


async def record_escalation(adapter: SlackAdapter, *, interaction_id: int, support_ts: str) -> None:
    """"Ask a human" was posted in the support channel as ``support_ts``: follow its thread."""
    channel = adapter.settings.slack_support_channel or ""
    await adapter.rt.learned.escalated(interaction_id=interaction_id, platform=SLACK, support_channel=channel,
                                       support_thread=support_ts,
                                       thread_url=await _permalink(adapter, channel, support_ts))


async def support_message(adapter: SlackAdapter, *, channel: str, thread_ts: str, ts: str, text: str,
                          user: str, marked: bool) -> DraftOutcome | None:
    """A message of a support thread (a reply, or one marked as the answer) → a draft or a changed one."""
    learned = adapter.rt.learned
    if not learned.enabled or channel != adapter.settings.slack_support_channel or not thread_ts:
        return None
    if await learned.escalation_for_thread(SLACK, channel, thread_ts) is None:
        return None
    outcome = await learned.support_reply(platform=SLACK, support_channel=channel, thread=thread_ts, text=text,
                                          author_id=user, author_name=user, message_id=ts,
                                          thread_url=await _permalink(adapter, channel, ts), marked=marked)
    if outcome is not None:
        await show_review(adapter, outcome, channel=channel, thread_ts=thread_ts)
    return outcome


async def on_support_reply(adapter: SlackAdapter, event: dict[str, Any]) -> bool:
    """From :func:`bot.slack.listeners.on_message`: True when the message was a support thread's (handled here)."""
    channel, thread_ts = str(event.get("channel") or ""), str(event.get("thread_ts") or "")
    if channel != adapter.settings.slack_support_channel or not thread_ts or thread_ts == event.get("ts"):
        return False
    if await adapter.rt.learned.escalation_for_thread(SLACK, channel, thread_ts) is None:
        return False
    await support_message(adapter, channel=channel, thread_ts=thread_ts, ts=str(event.get("ts") or ""),
                          text=str(event.get("text") or ""), user=str(event.get("user") or ""), marked=False)
    return True


async def on_reaction_added(adapter: SlackAdapter, event: dict[str, Any]) -> None:
    item = event.get("item") or {}
    channel, ts = str(item.get("channel") or ""), str(item.get("ts") or "")
    if (event.get("reaction") not in CHECK_REACTIONS or item.get("type") != "message"
            or channel != adapter.settings.slack_support_channel or not ts):
        return
    message = await _thread_message(adapter, channel, ts)
    if message is None or message.get("bot_id") or not message.get("thread_ts") or message["thread_ts"] == ts:
        return
    await support_message(adapter, channel=channel, thread_ts=str(message["thread_ts"]), ts=ts,
                          text=str(message.get("text") or ""), user=str(message.get("user") or ""), marked=True)


async def _thread_message(adapter: SlackAdapter, channel: str, ts: str) -> dict[str, Any] | None:
    """The message ``ts`` of a thread, read with ``conversations.replies`` (given a reply's ts it returns the
    whole thread, parent first; paged by cursor)."""
    cursor: str | None = None
    for _page in range(MAX_REPLY_PAGES):
        try:
            response = await adapter.client.conversations_replies(channel=channel, ts=ts, limit=200, cursor=cursor)
        except SlackApiError as exc:
            log.warning("slack.learned_message_unreadable", error=exc.response.get("error"))
            return None
        found = next((m for m in response.get("messages") or [] if m.get("ts") == ts), None)
        if found is not None:
            return dict(found)
        cursor = str((response.get("response_metadata") or {}).get("next_cursor") or "") or None
        if not response.get("has_more") or not cursor:
            return None
    return None


async def on_use_as_answer(adapter: SlackAdapter, body: dict[str, Any], respond: AsyncRespond) -> None:
    message = body.get("message") or {}
    channel = str((body.get("channel") or {}).get("id") or "")
    outcome = await support_message(adapter, channel=channel, thread_ts=str(message.get("thread_ts") or ""),
                                    ts=str(message.get("ts") or ""), text=str(message.get("text") or ""),
                                    user=str(message.get("user") or ""), marked=True)
    if outcome is not None:
        note = f":bulb: Saved as draft learned answer #{outcome.draft.id}; a knowledge owner reviews it."
    else:
        note = ("Only a reply in the thread of an “Ask a human” post in the support channel can be a learned answer "
                "(and only while it is a draft).")
    await _respond(respond, note)


async def _respond(respond: AsyncRespond, text: str) -> None:
    try:
        await respond(text=text, response_type="ephemeral", replace_original=False)
    except Exception as exc:  # noqa: BLE001 - a courtesy
        log.info("slack.respond_failed", error=str(exc))


def _learned_id(body: dict[str, Any]) -> int | None:
    action = (body.get("actions") or [{}])[0]
    try:
        return int(str(action.get("value", "")).strip())
    except ValueError:
        return None


async def _decided(adapter: SlackAdapter, row: LearnedAnswer, channel: str, ts: str) -> None:
    team = adapter.rt.learned.team(row.knowledge_set)
    try:
        await adapter.client.chat_update(channel=channel, ts=ts, **review_message(row, team))
    except SlackApiError as exc:
        log.warning("slack.learned_review_update_failed", error=exc.response.get("error"))


async def on_review(adapter: SlackAdapter, body: dict[str, Any], respond: AsyncRespond, decision: str) -> None:
    learned_id = _learned_id(body)
    reviewer = str((body.get("user") or {}).get("id") or "")
    container = body.get("container") or {}
    if learned_id is None:
        return
    learned = adapter.rt.learned
    try:
        if decision == EDIT:
            row = await learned.get(learned_id)
            if row is None or not learned.may_review(reviewer, row.knowledge_set):
                raise ReviewRefused("only a knowledge owner of this answer's knowledge set can edit it")
            await adapter.client.views_open(trigger_id=body["trigger_id"], view=edit_modal(
                row, channel=str(container.get("channel_id") or ""), message_ts=str(container.get("message_ts") or "")))
            return
        row = await (learned.approve(learned_id, reviewer) if decision == APPROVE
                     else learned.reject(learned_id, reviewer))
    except ReviewRefused as exc:
        await _respond(respond, f":no_entry: {exc}")
        return
    except (SlackApiError, KeyError) as exc:
        log.warning("slack.learned_edit_modal_failed", error=repr(exc)[:200])
        return
    if container.get("channel_id") and container.get("message_ts"):
        await _decided(adapter, row, str(container["channel_id"]), str(container["message_ts"]))


async def on_edit_submitted(adapter: SlackAdapter, body: dict[str, Any], view: dict[str, Any]) -> None:
    try:
        metadata = json.loads(view.get("private_metadata") or "{}")
        learned_id = int(metadata["learned_id"])
    except (ValueError, KeyError, TypeError):
        return
    values = (view.get("state") or {}).get("values") or {}
    text = str(((values.get(EDIT_BLOCK) or {}).get(EDIT_BLOCK) or {}).get("value") or "")
    reviewer = str((body.get("user") or {}).get("id") or "")
    try:
        row = await adapter.rt.learned.approve(learned_id, reviewer, text=text)
    except ReviewRefused as exc:
        log.info("slack.learned_edit_refused", error=str(exc))
        return
    if metadata.get("channel") and metadata.get("message_ts"):
        await _decided(adapter, row, str(metadata["channel"]), str(metadata["message_ts"]))


async def on_correction(adapter: SlackAdapter, *, interaction_id: int, user: str, comment: str | None) -> None:
    """A 👎 with a comment (:func:`bot.slack.actions.on_feedback_submitted`): a knowledge owner's correction
    becomes a draft, its review prompt posted in the support channel."""
    if not comment:
        return
    outcome = await adapter.rt.learned.correction(interaction_id=interaction_id, user_id=user, user_name=user,
                                                  comment=comment)
    if outcome is not None:
        await show_review(adapter, outcome, channel=adapter.settings.slack_support_channel, thread_ts=None)


async def show_due_for_review(client: AsyncWebClient, rows: list[LearnedAnswer], team: Callable[[str], str]) -> int:
    """Answers past their review date (the worker's cron): each Slack review prompt shows "due for review" and
    the buttons again, where the owners decided last time. Returns how many prompts were updated."""
    ensure_session(client)
    updated = 0
    for row in rows:
        where = row.review_message or {}
        if row.platform != SLACK or not where.get("channel") or not where.get("ts"):
            continue
        try:
            await client.chat_update(channel=where["channel"], ts=where["ts"],
                                     **review_message(row, team(row.knowledge_set)))
            updated += 1
        except SlackApiError as exc:
            log.warning("slack.learned_review_update_failed", error=exc.response.get("error"))
    return updated


def register(app: AsyncApp, adapter: SlackAdapter) -> None:
    async def reaction_added(event: dict[str, Any]) -> None:
        await adapter.after_ack(on_reaction_added(adapter, event), "reaction_added")

    async def use_as_answer(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await adapter.after_ack(on_use_as_answer(adapter, body, respond), "use_as_answer")

    def review(decision: str) -> Any:
        async def handler(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
            await ack()
            await adapter.after_ack(on_review(adapter, body, respond, decision), decision)
        return handler

    async def edit_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        await ack()
        await adapter.after_ack(on_edit_submitted(adapter, body, view), "learned_edit")

    app.event("reaction_added")(reaction_added)
    app.message_shortcut(USE_AS_ANSWER)(use_as_answer)
    for decision in (APPROVE, EDIT, REJECT):
        app.action(decision)(review(decision))
    app.view(EDIT_VIEW)(edit_submitted)
