"""What the Slack listeners share: where a question may be answered, and how it is handed to the worker.

:meth:`SlackAdapter.submit` is the ack-side half of an answer, run after the ack (by the inbox's consumer,
:mod:`bot.slack.inbox`, or by bolt). It hands the question to
:meth:`bot.intake.Intake.submit` (claim the event id, record once, enqueue) with one Slack step of its own:
before the question is recorded, the "Looking through the handbook…" placeholder is posted in the thread (paced
per channel) and its ``ts`` written into the ``reply_target`` for the worker to replace — the placeholder exists
before the job does, so the worker can never answer before it. Then, from the outcome:

- a redelivered event (``X-Slack-Retry-Num``) that got as far as posting a placeholder takes it back silently;
- a question that could not be recorded (the database is unreachable) turns the placeholder into a short
  apology: never a silent failure.

Which channels are answered at all is :meth:`bot.intake.Intake.policy`; whether someone asked in a thread before
is :meth:`bot.intake.Intake.asked_in_thread`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.log import get_logger
from bot.core.settings import Settings
from bot.core.types import Platform, Question
from bot.intake import Intake, Outcome, record_failed_reply_for
from bot.runtime import Runtime
from bot.slack.mrkdwn import escape
from bot.slack.pacing import ChannelPacer
from bot.slack.rendering import render_notice, render_placeholder
from bot.status_text import PLACEHOLDER
from playbooks.channel_policy import EffectivePolicy

log = get_logger(__name__)

CHANNEL_TYPE_TTL_S = 600
INTAKE_SLOTS = 4
SLACK_CHANNEL_TYPES = ("channel", "group", "im", "mpim")
#: While the Slack inbox dispatches an event (:mod:`bot.slack.inbox`): how many more times it will try the event
#: after this one (0 on its last try); None elsewhere. In the inbox a listener that fails fails the dispatch, and
#: the event stays there to be tried again (or set aside after its last try). Elsewhere (bolt acknowledged the
#: request itself) there is nobody to try again: the failure is logged.
INBOX_TRIES_LEFT: ContextVar[int | None] = ContextVar("slack_inbox_tries_left", default=None)


class RecordLater(RuntimeError):
    """The question could not be recorded now (the database busy or away), and the inbox will try the event
    again: no apology yet."""


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
    _inflight: set[asyncio.Task[Any]] = field(default_factory=set)
    _intake_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(INTAKE_SLOTS))

    # --- work after the ack -----------------------------------------------------------------------------
    async def after_ack(self, coro: Coroutine[Any, Any, None], what: str, *, bounded: bool = False) -> None:
        """Run a listener's post-ack work: tracked (a shutting-down process finishes it first, see
        :meth:`drain`) and, unless the inbox dispatches it (:data:`INBOX_TRIES_LEFT`), never raising into
        bolt, which could only log it tersely. ``bounded`` work (event
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
        except Exception:
            if INBOX_TRIES_LEFT.get() is not None:
                raise  # bolt answers the inbox 500 (and logs it): the event is tried again, or set aside
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

    @property
    def intake(self) -> Intake:
        return self.rt.intake

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
        """The channel's policy for intake (answer at all? every message?): :meth:`Intake.policy`."""
        return await self.intake.policy(Platform.SLACK.value, channel, channel_type)

    async def asked_in_thread(self, channel: str, thread_ts: str, user: str) -> bool:
        """Did ``user`` ask Deskmate in this thread before? Then their reply there is a follow-up. Replies by
        others are conversation between people (they can still mention @Deskmate)."""
        return await self.intake.asked_in_thread(Platform.SLACK.value, channel, thread_ts, user)

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
        """A plain-text hint only ``user`` sees (escaped here)."""
        try:
            await self.client.chat_postEphemeral(channel=channel, user=user, text=escape(text), thread_ts=thread_ts)
        except Exception as exc:  # noqa: BLE001 - a hint the user may miss; nothing was recorded
            log.warning("slack.ephemeral_failed", channel=channel, error=repr(exc))

    # --- handing a question to the worker -------------------------------------------------------------
    async def submit(self, question: Question, *, placeholder: bool = True) -> int | None:
        """Hand the question to intake, the placeholder posted first. Returns the interaction id, or None for
        a redelivered event (or one that could not be recorded — the user is told so in the thread)."""
        submitted = await self.intake.submit(question, prepare=self._post_placeholder if placeholder else None)
        placeholder_ts = question.reply_target.get("placeholder_ts")
        if submitted.outcome is Outcome.UNRECORDED:
            if INBOX_TRIES_LEFT.get():  # the inbox keeps the event and tries it again in a minute: no apology yet
                await self._withdraw(question, placeholder_ts, None)
                raise RecordLater("the question could not be recorded; the inbox will try the event again")
            await self._withdraw(question, placeholder_ts, await record_failed_reply_for(question))
            return None
        if submitted.outcome is Outcome.DUPLICATE:
            await self._withdraw(question, placeholder_ts, None)
            return None
        return submitted.interaction_id

    async def _post_placeholder(self, question: Question) -> None:
        """Intake's ``prepare`` step: the placeholder, whose ``ts`` the worker replaces with the answer — or, in an
        assistant thread (a thread of the DM), the thread's status instead ("Deskmate is Looking through the
        handbook…"), which the streamed answer follows (a placeholder only if Slack refuses the status)."""
        thread_ts = question.reply_target.get("thread_ts")
        if question.channel_type == "im" and thread_ts and question.channel.startswith("D"):
            try:
                await self.client.assistant_threads_setStatus(channel_id=question.channel, thread_ts=thread_ts,
                                                              status=PLACEHOLDER.text)
                return
            except Exception as exc:  # noqa: BLE001 - not an assistant thread, or no assistant:write scope
                log.info("slack.status_refused", error=repr(exc)[:200])
        placeholder_ts = await self.post(question.channel, thread_ts=question.reply_target.get("thread_ts"),
                                         **render_placeholder())
        if placeholder_ts:
            question.reply_target["placeholder_ts"] = placeholder_ts

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
