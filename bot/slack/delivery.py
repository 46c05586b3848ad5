"""Delivering answers to Slack (worker side): :func:`register` adds the :class:`SlackDeliverer`.

Where an answer goes depends on the ``reply_target`` the adapter wrote:
- a placeholder ``ts`` → ``chat.update`` replaces "Looking through the handbook…" with the answer (idempotent, so a
  retry never shows it twice); only if the placeholder is gone is the answer posted in the thread instead;
- no placeholder → ``chat.postMessage`` in the thread (paced per channel);
- ``/deskmate ask`` (ephemeral) → its ``response_url``, else ``chat.postEphemeral``.
Streaming (:meth:`SlackDeliverer.open_stream`, :mod:`bot.slack.streaming`): in a thread (an assistant thread, a
channel thread; not a top-level DM reply, an ephemeral ``/deskmate ask`` or a ``response_url``) the answer is
written live. When ``reply_target["stream"]`` names a message an earlier attempt streamed, that message is the one
the answer replaces (the stream stopped if still open, then ``chat.update``), and the placeholder is removed.

Long answers (more than about 10,000 characters: Slack answers ``msg_blocks_too_long`` around 12,000) are split
over several messages in the thread, marked "(continued below)" / "(continued)"; the first replaces the
placeholder, the sources and buttons go with the last. Nothing is cut.

Short 429s are waited out (``Retry-After``) by the client. Anything else that fails raises
:class:`~bot.delivery.DeliveryFailed`: retryable (429, 5xx, an HTML error page, a timeout, a refused connection)
or permanent (``channel_not_found``, ``not_in_channel``, ``invalid_auth``…); the pipeline retries the retryable
ones (:meth:`bot.pipeline.AnswerPipeline.deliver`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
from redis.asyncio import Redis
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.log import get_logger
from bot.core.settings import Settings
from bot.core.types import Answer, Question
from bot.delivery import STREAM_REFS, DeliveryFailed
from bot.slack.client import close_session, ensure_session, web_client, webhook_client
from bot.slack.pacing import ChannelPacer, pacer_for
from bot.slack.rendering import MESSAGE_TEXT_BUDGET, render_answer_parts, render_notice
from bot.slack.streaming import WORKSPACE_APPEND_BURST, WORKSPACE_APPENDS_PER_S, SlackAnswerStream

log = get_logger(__name__)

_GONE = {"message_not_found", "cant_update_message", "edit_window_closed", "msg_too_long"}
#: chat.stopStream errors that mean there is nothing left to stop (already stopped, timed out, or gone).
_NOT_STREAMING = {"message_not_in_streaming_state", "message_not_found", "cant_update_message",
                  "streaming_state_conflict"}
#: Slack's ``ok: false`` errors that another attempt can cure; every other error is permanent.
RETRYABLE_ERRORS = frozenset({"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
                              "request_timeout"})


def _header(headers: Any, name: str) -> str | None:
    if not isinstance(headers, Mapping):
        return None
    for key, value in headers.items():
        if str(key).lower() == name:
            return str(value[0] if isinstance(value, (list, tuple)) and value else value)
    return None


def delivery_failure(exc: BaseException) -> DeliveryFailed:
    """What a failed Web API call means for delivery: retryable (429, 5xx, HTML error page, network) or not."""
    if isinstance(exc, DeliveryFailed):
        return exc
    if isinstance(exc, SlackApiError):
        response = exc.response  # a SlackResponse, or aiohttp's response when the body was not JSON
        status = getattr(response, "status_code", None) or getattr(response, "status", None)
        data = getattr(response, "data", None)
        error = data.get("error") if isinstance(data, dict) else None
        retry_after: float | None = None
        raw = _header(getattr(response, "headers", None), "retry-after")
        if raw is not None:
            try:
                retry_after = max(0.0, float(raw))
            except ValueError:
                retry_after = None
        label = str(error) if error else f"HTTP {status}"
        retryable = (isinstance(status, int) and (status == 429 or status >= 500)) or error in RETRYABLE_ERRORS
        return DeliveryFailed(label, retryable=retryable, retry_after_s=retry_after)
    if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, OSError)):
        return DeliveryFailed(f"{exc.__class__.__name__}: {exc}"[:300], retryable=True)
    return DeliveryFailed(repr(exc)[:300], retryable=True)  # unknown: retried until the deadline, then recorded


def _error_of(exc: BaseException) -> str | None:
    data = getattr(getattr(exc, "response", None), "data", None)
    return str(data.get("error")) if isinstance(data, dict) and data.get("error") else None


class SlackDeliverer:
    def __init__(self, settings: Settings, pacer: ChannelPacer, client: AsyncWebClient | None = None, *,
                 append_pacer: ChannelPacer | None = None, streaming: bool = True) -> None:
        self.settings = settings
        self.pacer = pacer
        self.client = client or web_client(settings)
        #: chat.appendStream's workspace-wide budget (keyed by team); None: unpaced (Slack's 429s still honoured)
        self.append_pacer = append_pacer or ChannelPacer(pacer.redis, interval_s=0.0)
        #: False: answers are never streamed (the placeholder-then-update path; the benchmark's "before")
        self.streaming = streaming

    @property
    def ask_a_human(self) -> bool:
        return bool(self.settings.slack_support_channel)

    async def open_stream(self, question: Question) -> SlackAnswerStream | None:
        """A live answer in the question's thread, or None where Slack cannot stream it: no thread to reply in
        (a top-level DM reply), an ephemeral ``/deskmate ask``, streaming turned off."""
        target = question.reply_target
        channel = target.get("channel") or question.channel
        if (not self.streaming or question.ephemeral or target.get("response_url") or not channel
                or not target.get("thread_ts")):
            return None
        ensure_session(self.client)
        assistant = question.channel_type == "im" and str(channel).startswith("D")  # a DM thread: the Assistant
        return SlackAnswerStream(self.client, question, deliver=self.deliver, channel_pacer=self.pacer,
                                 append_pacer=self.append_pacer, classify=delivery_failure, assistant=assistant,
                                 ask_a_human=self.ask_a_human)

    async def deliver(self, question: Question, answer: Answer) -> dict[str, Any]:
        parts = render_answer_parts(answer, ask_a_human=self.ask_a_human)
        try:
            return await self._send(question, parts[0], more=parts[1:])
        except DeliveryFailed as exc:
            if exc.error != "msg_blocks_too_long":
                raise
            # Slack measured it longer than we did: smaller parts
            log.warning("slack.message_too_long", parts=len(parts))
            parts = render_answer_parts(answer, ask_a_human=self.ask_a_human, budget=MESSAGE_TEXT_BUDGET // 3)
            return await self._send(question, parts[0], more=parts[1:])

    async def deliver_failure(self, question: Question, message: str) -> dict[str, Any]:
        return await self._send(question, render_notice(message))

    async def _stop_stream(self, channel: str, refs: dict[str, Any]) -> None:
        """An earlier stream's message may still be streaming: stop it before it is replaced."""
        try:
            await self.client.chat_stopStream(channel=refs.get("channel") or channel, ts=refs["ts"])
        except SlackApiError as exc:
            if _error_of(exc) not in _NOT_STREAMING:
                raise

    async def _send(self, question: Question, message: dict[str, Any],
                    more: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        target = question.reply_target
        channel = target.get("channel") or question.channel
        ensure_session(self.client)
        try:
            if question.ephemeral:
                return await self._ephemeral(question, channel, message)
            streamed = target.get(STREAM_REFS) or {}
            if streamed.get("ts"):
                refs = await self._replace_stream(question, channel, streamed, message)
                if refs is not None:
                    await self._post_more(channel, target, more)
                    return refs
            placeholder = target.get("placeholder_ts")
            if placeholder:
                try:
                    response = await self.client.chat_update(channel=channel, ts=placeholder, **message)
                    await self._post_more(channel, target, more)
                    return {"method": "chat.update", "channel": channel, "ts": response.get("ts", placeholder)}
                except SlackApiError as exc:
                    data = getattr(exc.response, "data", None)
                    error = data.get("error") if isinstance(data, dict) else None
                    if error not in _GONE:
                        raise
                    log.warning("slack.placeholder_gone", error=error)
            await self.pacer.wait(channel)
            response = await self.client.chat_postMessage(channel=channel, thread_ts=target.get("thread_ts"),
                                                          **message)
            await self._post_more(channel, target, more)
            return {"method": "chat.postMessage", "channel": channel, "ts": response.get("ts")}
        except Exception as exc:  # noqa: BLE001 - classified: the pipeline retries or records it
            failure = delivery_failure(exc)
            log.warning("slack.delivery_attempt_failed", channel=channel, error=failure.error,
                        retryable=failure.retryable, retry_after_s=failure.retry_after_s)
            raise failure from exc

    async def _replace_stream(self, question: Question, channel: str, streamed: dict[str, Any],
                              message: dict[str, Any]) -> dict[str, Any] | None:
        """Put ``message`` in place of a streamed message; None when that message is gone (then the ordinary
        way). The placeholder the stream replaced is removed if it is still there."""
        channel = streamed.get("channel") or channel
        await self._stop_stream(channel, streamed)
        placeholder = question.reply_target.get("placeholder_ts")
        if placeholder:
            try:
                await self.client.chat_delete(channel=channel, ts=placeholder)
            except SlackApiError as exc:
                if _error_of(exc) not in _GONE:
                    log.info("slack.placeholder_delete_failed", error=_error_of(exc))
            question.reply_target.pop("placeholder_ts", None)
        try:
            response = await self.client.chat_update(channel=channel, ts=streamed["ts"], **message)
        except SlackApiError as exc:
            if _error_of(exc) not in _GONE:
                raise
            log.warning("slack.streamed_message_gone", error=_error_of(exc))
            return None
        return {"method": "chat.update", "channel": channel, "ts": response.get("ts", streamed["ts"]),
                "replaced_stream": True}

    async def _post_more(self, channel: str, target: dict[str, Any], more: list[dict[str, Any]] | None) -> None:
        """The rest of an answer too long for one message, in the same thread, in order."""
        for part in more or []:
            await self.pacer.wait(channel)
            await self.client.chat_postMessage(channel=channel, thread_ts=target.get("thread_ts"), **part)

    async def _ephemeral(self, question: Question, channel: str, message: dict[str, Any]) -> dict[str, Any]:
        target = question.reply_target
        response_url = target.get("response_url")
        if response_url:
            response = await webhook_client(self.settings, response_url).send(
                response_type="ephemeral", replace_original=False, **message)
            if response.status_code == 200:
                return {"method": "response_url", "channel": channel}
            log.warning("slack.response_url_failed", status=response.status_code, body=response.body[:200])
        user = target.get("user") or question.user
        result = await self.client.chat_postEphemeral(channel=channel, user=user, **message)
        return {"method": "chat.postEphemeral", "channel": channel, "ts": result.get("message_ts")}

    async def aclose(self) -> None:
        await close_session(self.client)


def slack_deliverer(settings: Settings, redis: Redis) -> SlackDeliverer | None:
    """The worker's Slack deliverer (built by :func:`bot.runtime.build_runtime`); None without a bot token.
    ``DESKMATE_STREAMING=off``: answers are never streamed (placeholder, then the whole answer)."""
    if not settings.slack_bot_token:
        return None
    append_pacer = ChannelPacer(redis, interval_s=1.0 / WORKSPACE_APPENDS_PER_S, burst=WORKSPACE_APPEND_BURST,
                                prefix="deskmate:slack:append")
    return SlackDeliverer(settings, pacer_for(redis, settings), append_pacer=append_pacer,
                          streaming=settings.streaming == "on")
