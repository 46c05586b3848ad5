"""Delivering answers to Teams from the worker: the placeholder message is updated in place.

The web turn stored the ``ConversationReference`` and the placeholder's activity id in the question's
``reply_target``; here the worker continues that conversation (``continue_conversation``) and replaces the
placeholder with the answer card. Transient failures (429, 412, 5xx, connection errors) are retried a few times
in the call (:mod:`bot.teams.retry`), then raised as a retryable :class:`~bot.delivery.DeliveryFailed` — the
pipeline retries later (with ``Retry-After``), the placeholder still being the one place the answer goes, so a
retry never shows it twice. Only if the placeholder cannot be updated for good (deleted: 404, 400…) is the answer
sent as a new message in the same thread. Permanent failures (403: the bot was removed, 401…) are raised as such.

In personal chats the web turn starts a stream instead of posting a placeholder (:mod:`bot.teams.streaming`):
:meth:`TeamsDeliverer.open_stream` continues it while the answer is written, and :meth:`TeamsDeliverer.deliver`
ends it with the final message — or, when that is no longer possible (the stream ended or ran too long:
403), replaces the streamed message with the answer card (and sends a new message only if that is gone too).
"""

from __future__ import annotations

import copy
import time
from typing import Any

from botbuilder.core import BotAdapter, CardFactory, TurnContext
from botbuilder.schema import Activity, ActivityTypes, ConversationReference
from botframework.connector.aio import ConnectorClient

from bot.core.log import get_logger
from bot.core.types import Answer, Platform, Question
from bot.core.settings import Settings
from bot.delivery import STREAM_REFS, DeliveryFailed
from bot.status_text import FAILURE_NOTICE, failure_notice
from bot.teams.adapter import TeamsAdapter
from bot.teams.cards import answer_card
from bot.teams.retry import describe, own_retries, retry_after_s, retryable_later, with_retries
from bot.teams.streaming import (
    STREAM_MAX_AGE_S,
    TeamsAnswerStream,
    final_activity,
    final_text_activity,
    stream_target,
)

log = get_logger(__name__)


def card_activity(card: dict[str, Any]) -> Activity:
    return Activity(type=ActivityTypes.message, attachments=[CardFactory.adaptive_card(card)])


def text_activity(text: str) -> Activity:
    return Activity(type=ActivityTypes.message, text=text, text_format="markdown")


class ProactiveSender:
    """Sends / updates activities in a stored conversation via ``continue_conversation``, with retries."""

    def __init__(self, adapter: TeamsAdapter, *, attempts: int, backoff_s: float) -> None:
        self.adapter = adapter
        self.attempts = attempts
        self.backoff_s = backoff_s

    async def _in_conversation(self, reference: ConversationReference, action: str, activity: Activity,
                               activity_id: str | None = None) -> str | None:
        result: dict[str, str | None] = {}

        async def logic(turn_context: TurnContext) -> None:
            connector: ConnectorClient = own_retries(turn_context.turn_state[BotAdapter.BOT_CONNECTOR_CLIENT_KEY])
            outgoing = copy.copy(activity)
            outgoing.conversation = reference.conversation
            outgoing.from_property = reference.bot
            outgoing.recipient = reference.user
            outgoing.service_url = reference.service_url
            outgoing.channel_id = reference.channel_id
            conversation_id = reference.conversation.id
            if action == "update":
                outgoing.id = activity_id
                response = await connector.conversations.update_activity(conversation_id, activity_id, outgoing)
                result["id"] = getattr(response, "id", None) or activity_id
            else:
                response = await connector.conversations.send_to_conversation(conversation_id, outgoing)
                result["id"] = getattr(response, "id", None)

        await self.adapter.continue_as_bot(reference, logic)
        return result.get("id")

    async def update(self, reference: ConversationReference, activity_id: str, activity: Activity) -> str | None:
        return await with_retries(lambda: self._in_conversation(reference, "update", activity, activity_id),
                                  attempts=self.attempts, backoff_s=self.backoff_s, what="teams.update_activity")

    async def send(self, reference: ConversationReference, activity: Activity) -> str | None:
        return await with_retries(lambda: self._in_conversation(reference, "send", activity),
                                  attempts=self.attempts, backoff_s=self.backoff_s, what="teams.send_activity")

    async def replace_or_send(self, reference: ConversationReference, placeholder_id: str | None,
                              activity: Activity) -> dict[str, Any]:
        """Update the placeholder; if it is gone for good, send a new message; report what was posted.
        Raises :class:`DeliveryFailed` (retryable for a transient failure, e.g. the service is down)."""
        outcome: dict[str, Any] = {"platform": Platform.TEAMS.value, "conversation_id": reference.conversation.id}
        if placeholder_id:
            try:
                activity_id = await self.update(reference, placeholder_id, activity)
                return outcome | {"ok": True, "updated": True, "activity_id": activity_id or placeholder_id}
            except Exception as exc:  # noqa: BLE001 - retryable: tried again later; gone: a new message
                if retryable_later(exc):
                    raise _failure(exc, reference) from exc
                outcome["update_error"] = describe(exc)
                log.warning("teams.update_failed_sending_new", error=outcome["update_error"])
        try:
            activity_id = await self.send(reference, activity)
            return outcome | {"ok": True, "updated": False, "activity_id": activity_id}
        except Exception as exc:  # noqa: BLE001 - classified: the pipeline retries or records it
            raise _failure(exc, reference) from exc


    async def end_stream_or_replace(self, reference: ConversationReference, stream_id: str, final: Activity,
                                    replacement: Activity) -> dict[str, Any]:
        """A reply where a stream was started: the stream's final message; if the stream cannot take it any more
        (ended, too old, refused: a 4xx), ``replacement`` over the streamed message (or as a new message)."""
        outcome: dict[str, Any] = {"platform": Platform.TEAMS.value, "conversation_id": reference.conversation.id}
        try:
            await self.send(reference, final)
            return outcome | {"ok": True, "updated": True, "activity_id": stream_id, "stream_id": stream_id,
                              "card": "compact", "method": "stream_final"}
        except Exception as exc:  # noqa: BLE001 - retryable: tried again later; refused: replaced instead
            if retryable_later(exc):
                raise _failure(exc, reference) from exc
            log.info("teams.stream_final_refused", error=describe(exc))
            result = await self.replace_or_send(reference, stream_id, replacement)
            return result | {"stream_error": describe(exc)}


def _failure(exc: BaseException, reference: ConversationReference) -> DeliveryFailed:
    failure = DeliveryFailed(describe(exc), retryable=retryable_later(exc), retry_after_s=retry_after_s(exc))
    log.warning("teams.delivery_attempt_failed", conversation_id=reference.conversation.id, error=failure.error,
                retryable=failure.retryable, retry_after_s=failure.retry_after_s)
    return failure


class TeamsDeliverer:
    def __init__(self, settings: Settings, adapter: TeamsAdapter | None = None) -> None:
        #: ``DESKMATE_STREAMING=off``: the web turn posts a placeholder, not a stream; a stream it started anyway
        #: (before the setting changed) is ended with the whole answer, not continued
        self.streaming = settings.streaming == "on"
        self.sender = ProactiveSender(adapter or TeamsAdapter(settings), attempts=settings.teams_delivery_attempts,
                                      backoff_s=settings.teams_delivery_backoff_s)

    @staticmethod
    def _target(question: Question) -> tuple[ConversationReference | None, str | None]:
        raw = question.reply_target.get("reference")
        if not raw:
            return None, None
        return ConversationReference().deserialize(raw), question.reply_target.get("placeholder_id")

    @staticmethod
    def _stream_id(question: Question) -> str | None:
        """The stream this reply goes into: an earlier stream's refs (the pipeline's), or the web turn's."""
        earlier = question.reply_target.get(STREAM_REFS) or {}
        return str(earlier.get("stream_id") or stream_target(question).get("stream_id") or "") or None

    async def open_stream(self, question: Question) -> TeamsAnswerStream | None:
        """A stream when the web turn started one (personal chats) and it is young enough to be continued."""
        target = stream_target(question)
        if not self.streaming or not target.get("stream_id") or question.reply_target.get(STREAM_REFS):
            return None
        age_s = time.time() - float(target.get("stream_started_at") or 0.0)
        if age_s > STREAM_MAX_AGE_S:
            log.info("teams.stream_too_old", age_s=round(age_s, 1))
            return None
        reference, _ = self._target(question)
        if reference is None:
            return None
        return TeamsAnswerStream(question, reference, send=self.sender.send, classify=_failure)

    async def deliver(self, question: Question, answer: Answer) -> dict[str, Any]:
        reference, placeholder_id = self._target(question)
        if reference is None:
            log.error("teams.delivery_no_reference", idempotency_key=question.idempotency_key)
            raise DeliveryFailed("no conversation reference", retryable=False)
        card = card_activity(answer_card(answer))
        stream_id = self._stream_id(question)
        if stream_id:
            return await self.sender.end_stream_or_replace(reference, stream_id, final_activity(stream_id, answer),
                                                           card)
        return await self.sender.replace_or_send(reference, placeholder_id, card)

    async def deliver_failure(self, question: Question, message: str) -> dict[str, Any]:
        reference, placeholder_id = self._target(question)
        if reference is None:
            log.error("teams.failure_notice_no_reference", idempotency_key=question.idempotency_key)
            raise DeliveryFailed("no conversation reference", retryable=False)
        if message == FAILURE_NOTICE:  # in the asker's language, as the web turn detected it
            message = failure_notice(question.reply_target.get("language"))
        stream_id = self._stream_id(question)
        if stream_id:
            return await self.sender.end_stream_or_replace(reference, stream_id,
                                                           final_text_activity(stream_id, message),
                                                           text_activity(message))
        return await self.sender.replace_or_send(reference, placeholder_id, text_activity(message))

    async def aclose(self) -> None:
        return None


def teams_deliverer(settings: Settings) -> TeamsDeliverer:
    """The worker's Teams deliverer (built by :func:`bot.runtime.build_runtime`)."""
    return TeamsDeliverer(settings)
