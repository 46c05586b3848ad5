"""Slack events → questions.

Answered: ``app_mention`` in channels; every message in a DM (``message.im``, including the Assistant panel's
threads); replies in a channel thread by someone who already asked Deskmate there (no new mention needed,
unless the reply mentions someone else); top-level messages in channels whose policy says ``respond_to: all``.
Ignored: Deskmate's own messages, other bots (unless ``slack_answer_bots``), edits, deletions and every other
subtype. Events are acknowledged before these run (at the door, once they are in the Slack inbox,
:mod:`bot.slack.inbox`; or by bolt while Redis cannot take them), so nothing here counts against Slack's 3-second
limit.
"""

from __future__ import annotations

import re
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext

from bot.core.log import get_logger
from bot.core.settings import Settings
from bot.core.types import Platform, Question
from bot.intake import QuestionRejected, clean_question
from bot.slack.adapter import SlackAdapter
from bot.slack.learned import on_support_reply

log = get_logger(__name__)

#: Message subtypes that are still a person writing (a thread reply also sent to the channel, a file + text).
ANSWERED_SUBTYPES = {None, "thread_broadcast", "file_share"}
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
DISABLED_REPLY = "I'm switched off in this channel. Ask an admin to turn me on, or send me a direct message."
ASSISTANT_GREETING = ("Hi! I'm Deskmate. I answer questions from the company handbook and cite my sources. "
                      "What would you like to know?")
SUGGESTED_PROMPTS = [
    {"title": "Book travel", "message": "How do I book travel for a work trip?"},
    {"title": "Annual leave", "message": "How many days of annual leave do I get?"},
    {"title": "VPN trouble", "message": "The VPN is not working. What should I do?"},
]


def strip_mentions(text: str, bot_user_id: str | None) -> str:
    """The question without the ``<@BOT>`` mention(s); other people's mentions stay."""
    if not bot_user_id:
        return text
    return _MENTION.sub(lambda m: "" if m.group(1) == bot_user_id else m.group(0), text)


def ignored(event: dict[str, Any], context: AsyncBoltContext, settings: Settings) -> str | None:
    """Why this message event is not a question (None when it is one)."""
    subtype = event.get("subtype")
    if event.get("bot_id") or subtype == "bot_message":
        if event.get("bot_id") == context.bot_id or event.get("user") == context.bot_user_id:
            return "self"
        if not settings.slack_answer_bots:
            return "bot"
    elif subtype not in ANSWERED_SUBTYPES:
        return f"subtype:{subtype}"
    if event.get("edited") or event.get("hidden"):
        return "edit"
    if not (event.get("user") or event.get("bot_id")):
        return "no author"
    return None


def event_key(body: dict[str, Any], event: dict[str, Any]) -> str:
    event_id = body.get("event_id")
    if event_id:
        return f"slack:{event_id}"
    return f"slack:{body.get('team_id', '')}:{event.get('channel', '')}:{event.get('ts', '')}"


async def ask(adapter: SlackAdapter, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext, *,
              channel_type: str, thread_key: str, reply_thread_ts: str | None) -> None:
    channel = event["channel"]
    user = event.get("user") or event.get("bot_id") or ""
    try:
        text = clean_question(strip_mentions(event.get("text") or "", context.bot_user_id), adapter.settings)
    except QuestionRejected as exc:
        log.info("slack.rejected", reason=exc.reason, channel=channel)
        await adapter.ephemeral(channel, user, exc.reply, thread_ts=reply_thread_ts)
        return
    question = Question(
        idempotency_key=event_key(body, event), platform=Platform.SLACK,
        workspace=str(body.get("team_id") or event.get("team") or ""), channel=channel, thread=thread_key,
        user=user, text=text, channel_type=channel_type,
        reply_target={"channel": channel, "thread_ts": reply_thread_ts, "user": user, "message_ts": event.get("ts")},
    )
    await adapter.submit(question)


async def on_app_mention(adapter: SlackAdapter, body: dict[str, Any], event: dict[str, Any],
                         context: AsyncBoltContext) -> None:
    if reason := ignored(event, context, adapter.settings):
        log.debug("slack.ignored", reason=reason)
        return
    channel = event["channel"]
    channel_type = await adapter.channel_type(channel, event.get("channel_type", ""),
                                              ext_shared=bool(body.get("is_ext_shared_channel")))
    policy = await adapter.policy(channel, channel_type)
    thread_ts = event.get("thread_ts") or event["ts"]
    if not policy.enabled:
        await adapter.ephemeral(channel, event.get("user", ""), DISABLED_REPLY, thread_ts=event.get("thread_ts"))
        return
    await ask(adapter, body, event, context, channel_type=channel_type, thread_key=thread_ts, reply_thread_ts=thread_ts)


async def on_message(adapter: SlackAdapter, body: dict[str, Any], event: dict[str, Any],
                     context: AsyncBoltContext) -> None:
    if reason := ignored(event, context, adapter.settings):
        log.debug("slack.ignored", reason=reason)
        return
    channel: str = event.get("channel") or ""
    thread_ts: str = event.get("thread_ts") or ""
    if event.get("channel_type") == "im" or channel.startswith("D"):
        # a DM is a conversation: top-level messages share the channel as their thread, answered top-level
        await ask(adapter, body, event, context, channel_type="im", thread_key=thread_ts or channel,
                  reply_thread_ts=thread_ts or None)
        return
    if context.bot_user_id and any(m.group(1) == context.bot_user_id
                                   for m in _MENTION.finditer(event.get("text") or "")):
        return  # the app_mention event for the same message answers it
    is_reply = bool(thread_ts) and thread_ts != event.get("ts")
    if is_reply and await on_support_reply(adapter, event):
        return  # a reply in an "Ask a human" thread of the support channel: a draft learned answer
    if is_reply and (_MENTION.search(event.get("text") or "")
                     or not await adapter.asked_in_thread(channel, thread_ts, event.get("user", ""))):
        return  # addressed to someone else, or not a thread where this person asked Deskmate
    channel_type = await adapter.channel_type(channel, event.get("channel_type", ""),
                                              ext_shared=bool(body.get("is_ext_shared_channel")))
    policy = await adapter.policy(channel, channel_type)
    if not policy.enabled or (not is_reply and policy.respond_to != "all"):
        return
    root: str = thread_ts if is_reply else event["ts"]
    await ask(adapter, body, event, context, channel_type=channel_type, thread_key=root, reply_thread_ts=root)


async def on_assistant_thread_started(adapter: SlackAdapter, event: dict[str, Any]) -> None:
    """The Assistant panel opened a thread: greet, and offer a few example questions."""
    thread = event.get("assistant_thread") or {}
    channel, thread_ts = thread.get("channel_id"), thread.get("thread_ts")
    if not channel or not thread_ts:
        return
    await adapter.post(channel, thread_ts=thread_ts, text=ASSISTANT_GREETING)
    try:
        await adapter.client.assistant_threads_setSuggestedPrompts(channel_id=channel, thread_ts=thread_ts,
                                                                   prompts=SUGGESTED_PROMPTS)
    except Exception as exc:  # noqa: BLE001 - prompts are a nicety
        log.info("slack.suggested_prompts_failed", error=str(exc))


def register(app: AsyncApp, adapter: SlackAdapter) -> None:
    async def app_mention(body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext) -> None:
        await adapter.after_ack(on_app_mention(adapter, body, event, context), "app_mention", bounded=True)

    async def message(body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext) -> None:
        await adapter.after_ack(on_message(adapter, body, event, context), "message", bounded=True)

    async def assistant_thread_started(event: dict[str, Any]) -> None:
        await adapter.after_ack(on_assistant_thread_started(adapter, event), "assistant_thread_started")

    async def acknowledged_only() -> None:
        return None

    app.event("app_mention")(app_mention)
    app.event("message")(message)
    app.event("assistant_thread_started")(assistant_thread_started)
    app.event("assistant_thread_context_changed")(acknowledged_only)

