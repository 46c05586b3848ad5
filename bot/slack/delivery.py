"""Delivering answers to Slack (worker side): :func:`register` adds the :class:`SlackDeliverer`.

Where an answer goes depends on the ``reply_target`` the adapter wrote:
- a placeholder ``ts`` → ``chat.update`` replaces "Looking through the handbook…" with the answer (idempotent, so a
  retry never shows it twice); only if the placeholder is gone is the answer posted in the thread instead;
- no placeholder → ``chat.postMessage`` in the thread (paced per channel);
- ``/deskmate ask`` (ephemeral) → its ``response_url``, else ``chat.postEphemeral``.
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
from bot.delivery import DeliveryFailed
from bot.slack.client import close_session, ensure_session, web_client, webhook_client
from bot.slack.pacing import ChannelPacer, pacer_for
from bot.slack.rendering import render_answer, render_notice

log = get_logger(__name__)

_GONE = {"message_not_found", "cant_update_message", "edit_window_closed", "msg_too_long"}
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


class SlackDeliverer:
    def __init__(self, settings: Settings, pacer: ChannelPacer, client: AsyncWebClient | None = None) -> None:
        self.settings = settings
        self.pacer = pacer
        self.client = client or web_client(settings)

    async def deliver(self, question: Question, answer: Answer) -> dict[str, Any]:
        message = render_answer(answer, ask_a_human=bool(self.settings.slack_support_channel))
        return await self._send(question, message)

    async def deliver_failure(self, question: Question, message: str) -> dict[str, Any]:
        return await self._send(question, render_notice(message))

    async def _send(self, question: Question, message: dict[str, Any]) -> dict[str, Any]:
        target = question.reply_target
        channel = target.get("channel") or question.channel
        ensure_session(self.client)
        try:
            if question.ephemeral:
                return await self._ephemeral(question, channel, message)
            placeholder = target.get("placeholder_ts")
            if placeholder:
                try:
                    response = await self.client.chat_update(channel=channel, ts=placeholder, **message)
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
            return {"method": "chat.postMessage", "channel": channel, "ts": response.get("ts")}
        except Exception as exc:  # noqa: BLE001 - classified: the pipeline retries or records it
            failure = delivery_failure(exc)
            log.warning("slack.delivery_attempt_failed", channel=channel, error=failure.error,
                        retryable=failure.retryable, retry_after_s=failure.retry_after_s)
            raise failure from exc

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
    """The worker's Slack deliverer (built by :func:`bot.runtime.build_runtime`); None without a bot token."""
    if not settings.slack_bot_token:
        return None
    return SlackDeliverer(settings, pacer_for(redis, settings))
