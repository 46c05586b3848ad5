"""What the Slack listeners share: where a question may be answered, and how it is handed to the worker.

:meth:`SlackAdapter.submit` is the ack-side half of an answer: record the question (its Slack event id is the
idempotency key, so a redelivered event stops here), post the "Looking through the handbook…" placeholder in
the thread, keep its ``ts`` in the question's ``reply_target`` for the worker to replace, then enqueue. The
placeholder is posted before enqueueing so the worker can never answer before it exists; if anything between
recording and enqueueing dies, the queue's sweeper enqueues the pending question later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlmodel import select

from bot.channel_policy import EffectivePolicy, resolve_policy
from bot.log import get_logger, redact
from bot.question import Platform, Question
from bot.queue import enqueue, record_question
from bot.runtime import Runtime
from bot.settings import Settings
from bot.slack.pacing import ChannelPacer
from bot.slack.rendering import render_placeholder
from feedback.models import Interaction

log = get_logger(__name__)

CHANNEL_TYPE_TTL_S = 600
SLACK_CHANNEL_TYPES = ("channel", "group", "im", "mpim")


def classify_conversation(info: dict[str, Any]) -> str:
    """conversations.info → the channel type of Slack's message events. Shared with other organisations
    counts as public: people outside the company are in it."""
    if info.get("is_im"):
        return "im"
    if info.get("is_ext_shared") or info.get("is_pending_ext_shared"):
        return "channel"
    if info.get("is_mpim"):
        return "mpim"
    if info.get("is_private") or info.get("is_group"):
        return "group"
    return "channel"


@dataclass
class SlackAdapter:
    rt: Runtime
    client: AsyncWebClient
    pacer: ChannelPacer

    @property
    def settings(self) -> Settings:
        return self.rt.settings

    # --- where are we ---------------------------------------------------------------------------------
    async def channel_type(self, channel: str, hint: str = "", *, ext_shared: bool = False) -> str:
        """The channel's type; when in doubt "channel" (public), so the stricter source policy applies."""
        if ext_shared:
            return "channel"
        if hint in SLACK_CHANNEL_TYPES:
            return hint
        if channel.startswith("D"):
            return "im"
        key = f"deskmate:slack:channel_type:{channel}"
        try:
            cached = await self.rt.redis.get(key)
            if cached:
                return cached.decode() if isinstance(cached, bytes) else str(cached)
        except Exception as exc:  # noqa: BLE001 - a cache miss, not a failure
            log.warning("slack.channel_type_cache_failed", error=str(exc))
        try:
            response = await self.client.conversations_info(channel=channel)
        except SlackApiError as exc:
            log.warning("slack.channel_type_unknown", channel=channel, error=exc.response.get("error"))
            return "channel"
        kind = classify_conversation(response.get("channel") or {})
        try:
            await self.rt.redis.set(key, kind, ex=CHANNEL_TYPE_TTL_S)
        except Exception:  # noqa: BLE001
            pass
        return kind

    async def policy(self, channel: str, channel_type: str) -> EffectivePolicy:
        async with self.rt.db.asession() as session:
            return await resolve_policy(session, Platform.SLACK.value, channel, channel_type)

    async def deskmate_in_thread(self, channel: str, thread_ts: str) -> bool:
        """Has Deskmate been asked in this thread before (then a reply there is a follow-up)?"""
        async with self.rt.db.asession() as session:
            stmt = select(Interaction.id).where(Interaction.platform == Platform.SLACK.value,
                                                Interaction.channel == channel, Interaction.thread == thread_ts).limit(1)
            return (await session.exec(stmt)).first() is not None

    # --- talking back ---------------------------------------------------------------------------------
    async def post(self, channel: str, *, thread_ts: str | None = None, **message: Any) -> str | None:
        """chat.postMessage, paced per channel; returns the message ts (None when Slack refused it)."""
        await self.pacer.wait(channel)
        try:
            response = await self.client.chat_postMessage(channel=channel, thread_ts=thread_ts, **message)
        except SlackApiError as exc:
            log.error("slack.post_failed", channel=channel, error=exc.response.get("error"))
            return None
        return str(response.get("ts") or "") or None

    async def ephemeral(self, channel: str, user: str, text: str, *, thread_ts: str | None = None) -> None:
        try:
            await self.client.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread_ts)
        except SlackApiError as exc:
            log.warning("slack.ephemeral_failed", channel=channel, error=exc.response.get("error"))

    # --- handing a question to the worker -------------------------------------------------------------
    async def submit(self, question: Question, *, placeholder: bool = True) -> int | None:
        """Record, show progress, enqueue. Returns the interaction id, or None for a redelivered event."""
        interaction_id, duplicate = await record_question(self.rt.db, question)
        if duplicate:
            log.info("slack.duplicate_event", key=question.idempotency_key, interaction_id=interaction_id)
            return None
        if placeholder:
            ts = await self.post(question.channel, thread_ts=question.reply_target.get("thread_ts"),
                                 **render_placeholder())
            if ts:
                question.reply_target["placeholder_ts"] = ts
                await self._save_payload(interaction_id, question)
        enqueued = await enqueue(self.rt.redis, interaction_id, question.idempotency_key)
        log.info("slack.question", interaction_id=interaction_id, channel=question.channel,
                 channel_type=question.channel_type, enqueued=enqueued, question=redact(question.text))
        return interaction_id

    async def _save_payload(self, interaction_id: int, question: Question) -> None:
        async with self.rt.db.asession() as session:
            row = await session.get(Interaction, interaction_id)
            if row is not None:
                row.question_payload = question.model_dump(mode="json")
                session.add(row)
                await session.commit()
