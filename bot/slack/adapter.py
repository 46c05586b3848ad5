"""What the Slack listeners share: where a question may be answered, and how it is handed to the worker.

:meth:`SlackAdapter.submit` is the ack-side half of an answer, run by bolt after the ack:
1. claim the event id in Redis (``SET NX``) — a redelivered event (``X-Slack-Retry-Num``) stops here;
2. post the "Looking through the handbook…" placeholder in the thread (paced per channel);
3. record the pending question once, its ``reply_target`` holding the placeholder's ``ts`` for the worker to
   replace — the event id is the interaction's unique idempotency key, the second guard against duplicates;
4. enqueue (the event id is the job id). If Redis is down, the queue's sweeper enqueues it later.
The placeholder exists before the job does, so the worker can never answer before it. A question that cannot be
recorded (the database is unreachable) turns the placeholder into a short apology: never a silent failure.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from sqlmodel import select

from playbooks.channel_policy import EffectivePolicy, default_public_only, resolve_policy
from bot.core.log import get_logger, redact
from bot.core.settings import Settings
from bot.core.types import Platform, Question
from bot.pipeline import hash_user
from bot.queue import enqueue, record_question
from bot.runtime import Runtime
from bot.slack.pacing import ChannelPacer
from bot.slack.rendering import render_notice, render_placeholder
from feedback.models import Interaction
from knowledge.retrieval import SearchFilter

log = get_logger(__name__)

CHANNEL_TYPE_TTL_S = 600
CLAIM_PREFIX = "deskmate:slack:event:"
CLAIM_TTL_S = 24 * 3600  # Slack stops redelivering an event within hours
#: Database sessions the listeners of one process hold at once: below the pool size (5 + 10 overflow), so a
#: burst of events queues here instead of exhausting the pool and piling onto SQLite's write lock.
DB_SLOTS = 8
INTAKE_SLOTS = 4
POLICY_CACHE_S = 10.0
POLICY_CACHE_SIZE = 2000
RECORD_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 4.0)
RECORD_FAILED_REPLY = "Sorry — I couldn't take your question just now. Please ask again in a minute."
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
    _db_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(DB_SLOTS))
    _policies: dict[tuple[str, str], tuple[float, EffectivePolicy]] = field(default_factory=dict)
    _inflight: set[asyncio.Task[Any]] = field(default_factory=set)
    _intake_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(INTAKE_SLOTS))

    # --- work after the ack -----------------------------------------------------------------------------
    async def after_ack(self, coro: Any, what: str, *, bounded: bool = False) -> None:
        """Run a listener's post-ack work: tracked (a shutting-down process finishes it first, see
        :meth:`drain`) and never raising into bolt, which could only log it tersely. ``bounded`` work (event
        intake) runs at most ``INTAKE_SLOTS`` at a time, so that during a burst the event loop keeps
        answering Slack's requests promptly instead of queueing each ack behind hundreds of intake steps."""
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            if bounded:
                async with self._intake_slots:
                    await coro
            else:
                await coro
        except Exception:  # noqa: BLE001
            log.exception("slack.listener_failed", what=what)
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait for acknowledged events still being handed to the worker (Slack will not resend them)."""
        pending = {t for t in self._inflight if not t.done()}
        if pending:
            log.info("slack.draining", pending=len(pending))
            await asyncio.wait(pending, timeout=timeout_s)

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
        except Exception as exc:  # noqa: BLE001 - Slack unreachable: fail closed
            log.warning("slack.channel_type_unknown", channel=channel, error=repr(exc))
            return "channel"
        kind = classify_conversation(response.get("channel") or {})
        try:
            await self.rt.redis.set(key, kind, ex=CHANNEL_TYPE_TTL_S)
        except Exception:  # noqa: BLE001
            pass
        return kind

    async def policy(self, channel: str, channel_type: str) -> EffectivePolicy:
        """The channel's policy for intake (answer at all? every message?), cached for ``POLICY_CACHE_S``:
        a burst of events in a channel costs one query. The worker re-reads it for every answer, so which
        sources may be cited is never stale."""
        key = (channel, channel_type)
        now = time.monotonic()
        cached = self._policies.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            async with self._db_slots, self.rt.db.asession() as session:
                policy = await resolve_policy(session, Platform.SLACK.value, channel, channel_type)
        except (DBAPIError, SQLAlchemyTimeout) as exc:
            # go on with the defaults: recording the question will tell the user if the database is down,
            # and the worker applies the real policy to whatever it answers
            log.warning("slack.policy_unavailable", channel=channel, error=str(exc)[:200])
            return EffectivePolicy(enabled=True, respond_to="mentions",
                                   search_filter=SearchFilter(public_only=default_public_only(channel_type)))
        if len(self._policies) >= POLICY_CACHE_SIZE:
            self._policies.clear()
        self._policies[key] = (now + POLICY_CACHE_S, policy)
        return policy

    async def asked_in_thread(self, channel: str, thread_ts: str, user: str) -> bool:
        """Did ``user`` ask Deskmate in this thread before? Then their reply there is a follow-up. Replies by
        others are conversation between people (they can still mention @Deskmate)."""
        try:
            async with self._db_slots, self.rt.db.asession() as session:
                stmt = select(Interaction.id).where(Interaction.platform == Platform.SLACK.value,
                                                    Interaction.channel == channel, Interaction.thread == thread_ts,
                                                    Interaction.user_hash == hash_user(user)).limit(1)
                return (await session.exec(stmt)).first() is not None
        except (DBAPIError, SQLAlchemyTimeout) as exc:
            log.warning("slack.thread_lookup_failed", error=str(exc)[:200])
            return False

    # --- talking back ---------------------------------------------------------------------------------
    async def post(self, channel: str, *, thread_ts: str | None = None, **message: Any) -> str | None:
        """chat.postMessage, paced per channel; returns the message ts (None when Slack refused it)."""
        await self.pacer.wait(channel)
        try:
            response = await self.client.chat_postMessage(channel=channel, thread_ts=thread_ts, **message)
        except SlackApiError as exc:
            log.error("slack.post_failed", channel=channel, error=exc.response.get("error"))
            return None
        except Exception as exc:  # noqa: BLE001 - network trouble after the client's retries
            log.error("slack.post_failed", channel=channel, error=repr(exc))
            return None
        return str(response.get("ts") or "") or None

    async def ephemeral(self, channel: str, user: str, text: str, *, thread_ts: str | None = None) -> None:
        try:
            await self.client.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread_ts)
        except Exception as exc:  # noqa: BLE001 - a hint the user may miss; nothing was recorded
            log.warning("slack.ephemeral_failed", channel=channel, error=repr(exc))

    # --- handing a question to the worker -------------------------------------------------------------
    async def submit(self, question: Question, *, placeholder: bool = True) -> int | None:
        """Claim, show progress, record, enqueue. Returns the interaction id, or None for a redelivered
        event (or one that could not be recorded — the user is told so in the thread)."""
        key = question.idempotency_key
        if await self._claim(key) is False:
            log.info("slack.duplicate_event", key=key)
            return None
        placeholder_ts = None
        if placeholder:
            placeholder_ts = await self.post(question.channel, thread_ts=question.reply_target.get("thread_ts"),
                                             **render_placeholder())
            if placeholder_ts:
                question.reply_target["placeholder_ts"] = placeholder_ts
        try:
            interaction_id, duplicate = await self._record(question)
        except (DBAPIError, SQLAlchemyTimeout) as exc:
            log.error("slack.record_failed", key=key, error=str(exc)[:300])
            await self._release(key)
            await self._withdraw(question, placeholder_ts, RECORD_FAILED_REPLY)
            return None
        if duplicate:  # the Redis claim was unavailable; the database caught the redelivery
            log.info("slack.duplicate_event", key=key, interaction_id=interaction_id)
            await self._withdraw(question, placeholder_ts, None)
            return None
        enqueued = await enqueue(self.rt.redis, interaction_id, key)
        log.info("slack.question", interaction_id=interaction_id, channel=question.channel,
                 channel_type=question.channel_type, enqueued=enqueued, question=redact(question.text))
        return interaction_id

    async def _claim(self, key: str) -> bool | None:
        """Redis ``SET NX`` on the event key: True = first delivery, False = seen, None = Redis unavailable
        (then the unique key in the database is the only guard)."""
        try:
            return bool(await self.rt.redis.set(f"{CLAIM_PREFIX}{key}", b"1", nx=True, ex=CLAIM_TTL_S))
        except Exception as exc:  # noqa: BLE001
            log.warning("slack.claim_unavailable", error=str(exc))
            return None

    async def _release(self, key: str) -> None:
        try:
            await self.rt.redis.delete(f"{CLAIM_PREFIX}{key}")
        except Exception:  # noqa: BLE001
            pass

    async def _record(self, question: Question) -> tuple[int, bool]:
        """The pending interaction, written once with its final payload; retried while SQLite is busy."""
        for attempt, delay in enumerate((*RECORD_BACKOFF_S, None)):
            try:
                async with self._db_slots:
                    return await record_question(self.rt.db, question)
            except (OperationalError, SQLAlchemyTimeout) as exc:
                if delay is None:
                    raise
                log.warning("slack.record_retry", attempt=attempt + 1, error=str(exc)[:200])
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _withdraw(self, question: Question, placeholder_ts: str | None, reply: str | None) -> None:
        """Take back a placeholder: replace it with ``reply``, or delete it."""
        if not placeholder_ts:
            if reply:
                await self.ephemeral(question.channel, question.user, reply,
                                     thread_ts=question.reply_target.get("thread_ts"))
            return
        try:
            if reply:
                await self.client.chat_update(channel=question.channel, ts=placeholder_ts, **render_notice(reply))
            else:
                await self.client.chat_delete(channel=question.channel, ts=placeholder_ts)
        except Exception as exc:  # noqa: BLE001
            log.warning("slack.withdraw_failed", error=repr(exc))
