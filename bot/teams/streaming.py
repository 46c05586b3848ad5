"""Streamed answers in Teams personal chats (Microsoft's "Stream bot messages"; Teams streams only in one-on-one
chats — channels and group chats keep the placeholder that is updated with the answer).

The protocol, over the connector's ordinary ``POST /v3/conversations/{id}/activities``:

1. **Start** — a ``typing`` activity with the text of an *informative* update and the entity
   ``{"type": "streaminfo", "streamType": "informative", "streamSequence": 1}``; Teams answers 201 with an id,
   the **stream id**. The web turn sends it instead of the placeholder message (:func:`start_activity`), so the
   user sees "⏳ Looking through the handbook…" at once, and stores the stream id in the question's
   ``reply_target`` (``stream_id``, ``stream_sequence``, ``stream_started_at``).
2. **Updates** — more ``typing`` activities carrying ``streamId`` and a rising ``streamSequence``: informative
   ones ("🔎 Searching the handbook…", "✍️ Writing…", in the asker's language), then ``streaming`` ones whose text is the whole answer so far
   (each must begin with the text before). Teams throttles: at most one update per :data:`STREAM_INTERVAL_S`
   per stream; text arriving in between is coalesced into the next update, so the model is never held back.
3. **Final** — a ``message`` with ``streamType: final`` and the ``streamId`` (no ``streamSequence``): its text is
   the complete answer, and its attachment the card with the label, the numbered sources and 👍/👎/"Ask a human"
   (attachments are allowed only here). Teams gives a stream two minutes; after the final message it is an
   ordinary message.

Failures (``403 ContentStreamNotAllowed`` — streaming not allowed, the stream ended or ran too long, the message too
large —, 429 beyond the quick retries, anything else) are raised as :class:`~bot.delivery.DeliveryFailed`; the
pipeline then delivers the answer without the stream, and :class:`~bot.teams.delivery.TeamsDeliverer` closes the
stream with the final message or, when it cannot, replaces the streamed message (or sends a new one): never a
half answer left, never two answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from botbuilder.core import CardFactory
from botbuilder.schema import Activity, ActivityTypes, ConversationReference, Entity

from bot.core.log import get_logger
from bot.core.types import Answer, Platform, Question, Status
from bot.delivery import DeliveryFailed
from bot.status_text import SEARCHING, WRITING, Progress, progress_in
from bot.teams.cards import MAX_MESSAGE_TEXT_BYTES, answer_card, card_has_content, message_text

log = get_logger(__name__)

#: At most one streaming update per stream this often (seconds): Teams throttles faster ones.
STREAM_INTERVAL_S = 1.0
#: Teams ends a stream after two minutes; a stream older than this is not continued (the answer replaces it).
STREAM_MAX_AGE_S = 90.0
#: The text an informative update may carry (Teams: 1,000 characters).
MAX_INFORMATIVE_CHARS = 1_000

_PROGRESS = {p.text: p for p in (SEARCHING, WRITING)}

Send = Callable[[ConversationReference, Activity], Awaitable[str | None]]
Classify = Callable[[BaseException, ConversationReference], DeliveryFailed]


class StreamInfo(Entity):
    """The ``streaminfo`` entity (botbuilder's ``Entity`` serialises only ``type``)."""

    _attribute_map = {
        "type": {"key": "type", "type": "str"},
        "stream_id": {"key": "streamId", "type": "str"},
        "stream_type": {"key": "streamType", "type": "str"},
        "stream_sequence": {"key": "streamSequence", "type": "int"},
    }

    def __init__(self, *, stream_type: str, stream_id: str | None = None, stream_sequence: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(type="streaminfo", **kwargs)
        self.stream_id = stream_id
        self.stream_type = stream_type
        self.stream_sequence = stream_sequence


def stream_activity(text: str, *, stream_type: str, sequence: int | None = None, stream_id: str | None = None,
                    attachments: list[Any] | None = None) -> Activity:
    """A streaming activity: ``typing`` for informative / streaming updates, ``message`` for the final one. The
    stream fields go in the ``streaminfo`` entity and, as Microsoft's own Teams libraries also send them, in
    ``channelData``."""
    final = stream_type == "final"
    channel_data = {"streamType": stream_type, "streamSequence": sequence, "streamId": stream_id}
    return Activity(
        type=ActivityTypes.message if final else ActivityTypes.typing,
        text=text, text_format="markdown", attachments=attachments or None,
        entities=[StreamInfo(stream_type=stream_type, stream_id=stream_id, stream_sequence=sequence)],
        channel_data={k: v for k, v in channel_data.items() if v is not None},
    )


def start_activity(text: str) -> Activity:
    """The first activity of a stream: an informative update (the web turn's "looking it up")."""
    return stream_activity(text[:MAX_INFORMATIVE_CHARS], stream_type="informative", sequence=1)


def final_activity(stream_id: str, answer: Answer) -> Activity:
    """The final message of a stream: the answer's text, and the card with its label, sources and actions."""
    card = answer_card(answer, text_in_message=True)
    attachments = [CardFactory.adaptive_card(card)] if card_has_content(card) else None
    return stream_activity(message_text(answer), stream_type="final", stream_id=stream_id, attachments=attachments)


def final_text_activity(stream_id: str, text: str) -> Activity:
    """The final message of a stream that ends with a notice instead of an answer."""
    return stream_activity(text, stream_type="final", stream_id=stream_id)


def stream_target(question: Question) -> dict[str, Any]:
    """The stream the web turn started for this question (``stream_id`` …), or an empty dict."""
    target = question.reply_target
    return {k: target[k] for k in ("stream_id", "stream_sequence", "stream_started_at") if target.get(k)}


class TeamsAnswerStream:
    """One answer streamed into a Teams personal chat: the :class:`~bot.delivery.AnswerStream` of
    :class:`~bot.teams.delivery.TeamsDeliverer` (the web turn started the stream; this continues and ends it).

    Sending happens in a background task, one activity at a time (Teams wants each call answered before the
    next) and at most every :data:`STREAM_INTERVAL_S`; :meth:`status` and :meth:`append` return at once. A
    failure is kept and raised, as :class:`DeliveryFailed`, by the next call."""

    def __init__(self, question: Question, reference: ConversationReference, *, send: Send, classify: Classify, interval_s: float = STREAM_INTERVAL_S,
                 max_text_bytes: int = MAX_MESSAGE_TEXT_BYTES) -> None:
        target = stream_target(question)
        self.question = question
        self.language = str(question.reply_target.get("language") or "") or None  # the web turn detected it
        self.reference = reference
        self.stream_id = str(target["stream_id"])
        self.sequence = int(target.get("stream_sequence") or 1)
        self.interval_s = interval_s
        self.max_text_bytes = max_text_bytes
        self._send = send
        self._classify = classify
        started_at = float(target.get("stream_started_at") or 0.0)
        # the web turn's start counts as the last update (its time from the wall clock, it was another process)
        self._last_send = time.monotonic() - max(0.0, time.time() - started_at) if started_at else 0.0
        self._status: str | None = None  # an informative update waiting to be sent
        self._shown_status: str | None = None
        self.text = ""  # the answer so far (every append)
        self.sent = ""  # what Teams has (the last streaming update's text)
        self.updates = 0
        self._capped = False  # the streamed text reached max_text_bytes: the rest comes with the final message
        self._error: DeliveryFailed | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._pump: asyncio.Task[None] | None = None

    @property
    def refs(self) -> dict[str, Any]:
        return {"platform": Platform.TEAMS.value, "conversation_id": self.reference.conversation.id,
                "stream_id": self.stream_id, "activity_id": self.stream_id}

    # --- the AnswerStream protocol ------------------------------------------------------------------------
    async def status(self, text: str) -> None:
        self._raise_if_failed()
        if self.text or text == self._shown_status:
            return  # the answer is already showing: no more informative updates
        self._status = text
        self._kick()

    async def append(self, text: str) -> None:
        self._raise_if_failed()
        self.text += text
        self._kick()

    async def finish(self, answer: Answer) -> dict[str, Any]:
        await self._drain()
        await self._final(final_activity(self.stream_id, answer))
        log.info("teams.stream_finished", updates=self.updates, streamed_chars=len(self.sent),
                 same_text=answer.text == self.text)
        return self.refs | {"ok": True, "updated": True, "card": "compact", "method": "stream"}

    async def abandon(self, text: str) -> dict[str, Any]:
        await self._drain()
        await self._final(final_activity(self.stream_id, Answer(text=text, status=Status.MAINTENANCE)))
        log.info("teams.stream_abandoned", updates=self.updates)
        return self.refs | {"ok": True, "updated": True, "card": "compact", "method": "stream"}

    # --- internals --------------------------------------------------------------------------------------------
    def _kick(self) -> None:
        if self._pump is None:
            self._pump = asyncio.create_task(self._run(), name="teams-stream")
        self._wake.set()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    async def _final(self, activity: Activity) -> None:
        try:
            await self._send(self.reference, activity)
        except DeliveryFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - classified: the pipeline delivers without the stream
            raise self._classify(exc, self.reference) from exc

    async def _drain(self) -> None:
        """Stop the background sender (what it has not sent goes in the final message)."""
        self._closing = True
        self._wake.set()
        if self._pump is not None:
            await asyncio.gather(self._pump, return_exceptions=True)
        self._raise_if_failed()

    def _due(self) -> bool:
        if self.text:
            return self.text != self.sent and not self._capped
        return self._status is not None and self._status != self._shown_status

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._closing:
                    return
                if not self._due():
                    continue
                wait = self._last_send + self.interval_s - time.monotonic()
                if wait > 0:
                    try:  # coalesce: more text arrives meanwhile; the end cuts the wait short
                        await asyncio.wait_for(self._closed(), wait)
                    except TimeoutError:
                        pass
                    if self._closing:
                        return
                await self._send_update()
        except DeliveryFailed as exc:
            self._error = exc
        except Exception as exc:  # noqa: BLE001 - kept and raised by the next call
            self._error = self._classify(exc, self.reference)
            log.warning("teams.stream_failed", error=self._error.error, updates=self.updates)

    async def _closed(self) -> None:
        while not self._closing:
            self._wake.clear()
            await self._wake.wait()

    async def _send_update(self) -> None:
        self.sequence += 1
        if self.text:
            text = self.text
            if len(text.encode()) > self.max_text_bytes:
                text = text.encode()[:self.max_text_bytes].decode(errors="ignore")
                self._capped = True
            activity = stream_activity(text, stream_type="streaming", sequence=self.sequence,
                                       stream_id=self.stream_id)
        else:
            status = self._status or ""
            progress = progress_in(_PROGRESS.get(status, Progress("⏳", status)), self.language)
            text = progress.with_icon[:MAX_INFORMATIVE_CHARS]
            activity = stream_activity(text, stream_type="informative", sequence=self.sequence,
                                       stream_id=self.stream_id)
        self._last_send = time.monotonic()
        await self._send(self.reference, activity)
        self._last_send = time.monotonic()
        self.updates += 1
        if self.text:
            self.sent = text
        else:
            self._shown_status = self._status
        if self._due():
            self._wake.set()  # more arrived while sending
