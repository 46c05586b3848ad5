"""A streamed answer in Slack (:class:`SlackAnswerStream`, the :class:`~bot.delivery.AnswerStream` of
:class:`bot.slack.delivery.SlackDeliverer`).

What the user sees:

- **Status.** In an assistant thread (a DM thread: the Assistant panel) ``assistant.threads.setStatus`` shows
  "Deskmate is Searching the handbook…", then "Writing…" (Slack clears it when the reply arrives). Elsewhere the
  placeholder the adapter posted ("Looking through the handbook…") is the visible progress indicator: it is
  updated to "Writing…" when the model starts.
- **The answer growing.** The first text starts the streamed message (``chat.startStream`` in the thread, with
  ``recipient_team_id``/``recipient_user_id`` outside DMs, as Slack requires in channels); the placeholder is then
  deleted. Later text is coalesced and sent with ``chat.appendStream``: at most every :data:`APPEND_INTERVAL_S`
  per stream and within a workspace-wide budget shared by every worker through Redis (:data:`WORKSPACE_APPENDS_PER_S`,
  :class:`~bot.slack.pacing.ChannelPacer` keyed by team). A 429 is waited out for its ``Retry-After`` by the
  client (:mod:`bot.slack.client`); text keeps accumulating meanwhile and goes out in the next call.
- **The end.** ``finish``: when the answer is exactly what was streamed, ``chat.stopStream`` adds the rest of the
  text and the sources and 👍/👎/"Ask a human" blocks. Otherwise (the model fell back midway, the answer turned
  out "not found", or it is longer than :data:`STREAM_TEXT_LIMIT`) the stream is stopped and the message is
  replaced in place by the complete answer, split over several messages with "(continued)" when too long.
  Nothing streamed yet (an extractive or "not found" answer): the ordinary placeholder-then-update delivery.

The streamed text is the model's Markdown, sent as Slack's ``markdown_text``, escaped like every text Deskmate
sends (``&``, ``<``, ``>`` as entities: :func:`bot.slack.mrkdwn.escape`), so nothing in it can become a
``<!channel>``, ``<@U…>`` or ``<url|label>`` control sequence.

Sending happens in a background task so :meth:`append` returns at once (the model's stream is never held
back); a failure is kept and raised, as :class:`~bot.delivery.DeliveryFailed`, by the next call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.core.log import get_logger
from bot.core.types import Answer, Question, Status
from bot.delivery import DeliveryFailed
from bot.slack.mrkdwn import escape
from bot.slack.pacing import ChannelPacer
from bot.slack.rendering import feedback_actions, render_progress, sources_blocks
from bot.status_text import SEARCHING, WRITING, Progress

log = get_logger(__name__)

#: At most one ``chat.appendStream`` per stream this often (seconds); text in between is coalesced.
APPEND_INTERVAL_S = 1.0
#: ``chat.appendStream`` calls per second for a whole workspace (every stream, every worker), with this burst.
WORKSPACE_APPENDS_PER_S = 10.0
WORKSPACE_APPEND_BURST = 20
#: The most text one streamed message takes (``markdown_text`` is limited to 12,000 characters per call, and a
#: longer answer is split over several messages at the end anyway).
STREAM_TEXT_LIMIT = 11_000

_PROGRESS = {p.text: p for p in (SEARCHING, WRITING)}


def defuse(text: str) -> str:
    """Streamed text as Slack may read it: escaped, so no control sequence can be formed."""
    return escape(text)


Deliver = Callable[[Question, Answer], Awaitable[dict[str, Any]]]


class SlackAnswerStream:
    def __init__(self, client: AsyncWebClient, question: Question, *, deliver: Deliver, channel_pacer: ChannelPacer,
                 append_pacer: ChannelPacer, classify: Callable[[BaseException], DeliveryFailed],
                 assistant: bool, ask_a_human: bool = False) -> None:
        target = question.reply_target
        self.client = client
        self.question = question
        self.channel = str(target.get("channel") or question.channel)
        self.thread_ts = str(target.get("thread_ts") or "")
        self.placeholder_ts = target.get("placeholder_ts")
        self.assistant = assistant
        self.ask_a_human = ask_a_human
        self.recipient: dict[str, str] = {}
        if not self.channel.startswith("D"):
            self.recipient = {"recipient_team_id": question.workspace,
                              "recipient_user_id": str(target.get("user") or question.user)}
        self._deliver = deliver
        self._channel_pacer = channel_pacer
        self._append_pacer = append_pacer
        self._classify = classify
        self._refs: dict[str, Any] = {}
        self.ts: str | None = None
        self.sent = ""  # the (defused) text Slack has
        self._raw_sent = ""  # the same, as the model wrote it
        self._buffer = ""  # text not sent yet
        self._error: DeliveryFailed | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._pump: asyncio.Task[None] | None = None
        self._last_send = 0.0
        self.appends = 0

    @property
    def refs(self) -> dict[str, Any]:
        return dict(self._refs)

    # --- the AnswerStream protocol ------------------------------------------------------------------------
    async def status(self, text: str) -> None:
        """Cosmetic: a failure is logged, never raised (the answer matters, not the status)."""
        if self.ts is not None:
            return
        try:
            if self.assistant:
                await self.client.assistant_threads_setStatus(channel_id=self.channel, thread_ts=self.thread_ts,
                                                              status=text)
            elif self.placeholder_ts and text != SEARCHING.text:  # the placeholder already says it is looking
                progress = _PROGRESS.get(text, Progress("⏳", text))
                await self.client.chat_update(channel=self.channel, ts=self.placeholder_ts,
                                              **render_progress(progress))
        except Exception as exc:  # noqa: BLE001
            log.info("slack.stream_status_failed", error=repr(exc)[:200])

    async def append(self, text: str) -> None:
        self._raise_if_failed()
        self._buffer += text
        if self._pump is None:
            self._pump = asyncio.create_task(self._run(), name="slack-stream")
        self._wake.set()

    async def finish(self, answer: Answer) -> dict[str, Any]:
        await self._drain()
        if self.ts is None:  # nothing streamed: the ordinary delivery (updates the placeholder)
            return await self._deliver(self.question, answer)
        complete = self._raw_sent + self._buffer
        plain = answer.status is Status.ANSWERED and not answer.fallback
        if plain and answer.text == complete and len(defuse(complete)) <= STREAM_TEXT_LIMIT:
            tail = sources_blocks(answer.sources)
            if answer.interaction_id is not None:
                tail.append(feedback_actions(answer.interaction_id, ask_a_human=self.ask_a_human))
            rest = defuse(self._buffer) if self._buffer else None
            await self._call(self.client.chat_stopStream(channel=self.channel, ts=self.ts, markdown_text=rest,
                                                         blocks=tail or None))
            self._buffer = ""
            return self.refs | {"method": "chat.stopStream"}
        return await self._replace(answer)

    async def abandon(self, text: str) -> dict[str, Any]:
        await self._drain()
        if self.ts is None:
            return await self._deliver(self.question, Answer(text=text, status=Status.MAINTENANCE))
        return await self._replace(Answer(text=text, status=Status.MAINTENANCE))

    # --- internals --------------------------------------------------------------------------------------------
    async def _replace(self, answer: Answer) -> dict[str, Any]:
        """Stop the stream and put the complete answer in its place (the deliverer's update of an earlier stream)."""
        question = self.question.model_copy(deep=True)
        question.reply_target["stream"] = self.refs
        return await self._deliver(question, answer)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    async def _drain(self) -> None:
        """Stop the background sender; the text it still holds is left in the buffer for the end."""
        self._closing = True
        self._wake.set()
        if self._pump is not None:
            await asyncio.gather(self._pump, return_exceptions=True)
        self._raise_if_failed()

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._closing:
                    return  # what is left goes with the end (not started yet: the ordinary delivery)
                if self.ts is not None:
                    wait = self._last_send + APPEND_INTERVAL_S - time.monotonic()
                    if wait > 0:
                        try:  # coalesce: more text arrives meanwhile; the end cuts the wait short
                            await asyncio.wait_for(self._closed(), wait)
                        except TimeoutError:
                            pass
                        if self._closing:
                            return
                await self._send()
        except DeliveryFailed as exc:
            self._error = exc
        except Exception as exc:  # noqa: BLE001 - kept and raised by the next call
            self._error = self._classify(exc)

    async def _closed(self) -> None:
        while not self._closing:
            self._wake.clear()
            await self._wake.wait()

    async def _send(self) -> None:
        if self.ts is not None:
            delay = await self._append_pacer.reserve(self.question.workspace or self.channel)
            if delay > 0:  # the workspace's budget: wait our turn — unless the answer ends meanwhile (the end
                try:       # then carries the text)
                    await asyncio.wait_for(self._closed(), delay)
                    return
                except TimeoutError:
                    pass
        text = self._buffer  # everything so far: what came while we waited goes too
        room = STREAM_TEXT_LIMIT - len(self.sent)
        if not text.strip() or room <= 0:
            return
        chunk = defuse(text)
        if len(chunk) > room:
            return  # the rest goes with the final message
        self._buffer = self._buffer[len(text):]
        self._last_send = time.monotonic()
        if self.ts is None:
            await self._channel_pacer.wait(self.channel)
            response = await self._call(self.client.chat_startStream(
                channel=self.channel, thread_ts=self.thread_ts, markdown_text=chunk,
                recipient_team_id=self.recipient.get("recipient_team_id"),
                recipient_user_id=self.recipient.get("recipient_user_id")))
            self.ts = str(response.get("ts"))
            self._refs = {"method": "chat.startStream", "channel": self.channel, "ts": self.ts}
            await self._remove_placeholder()
        else:
            await self._call(self.client.chat_appendStream(channel=self.channel, ts=self.ts, markdown_text=chunk))
            self.appends += 1
        self.sent += chunk
        self._raw_sent += text

    async def _call(self, request: Awaitable[Any]) -> Any:
        try:
            return await request
        except DeliveryFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - classified like any delivery attempt
            raise self._classify(exc) from exc

    async def _remove_placeholder(self) -> None:
        if not self.placeholder_ts:
            return
        try:
            await self.client.chat_delete(channel=self.channel, ts=self.placeholder_ts)
        except Exception as exc:  # noqa: BLE001 - a leftover "Writing…" is cosmetic; deliver() retries the delete
            log.info("slack.placeholder_delete_failed", error=repr(exc)[:200])
