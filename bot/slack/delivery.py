"""Delivering answers to Slack (worker side): :func:`register` adds the :class:`SlackDeliverer`.

Where an answer goes depends on the ``reply_target`` the adapter wrote:
- a placeholder ``ts`` → ``chat.update`` replaces "Looking through the handbook…" with the answer (if the
  placeholder is gone, the answer is posted in the thread instead);
- no placeholder → ``chat.postMessage`` in the thread (paced per channel);
- ``/deskmate ask`` (ephemeral) → its ``response_url``, else ``chat.postEphemeral``.
429s are waited out (``Retry-After``) by the client. A delivery that fails for good is recorded in the
interaction's ``delivery`` field (``error``) rather than raised: the answer itself is already recorded.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.log import get_logger
from bot.core.settings import Settings
from bot.core.types import Answer, Question
from bot.slack.client import close_session, ensure_session, web_client, webhook_client
from bot.slack.pacing import ChannelPacer, pacer_for
from bot.slack.rendering import render_answer, render_notice

log = get_logger(__name__)

_GONE = {"message_not_found", "cant_update_message", "edit_window_closed", "msg_too_long"}


class SlackDeliverer:
    def __init__(self, settings: Settings, pacer: ChannelPacer, client: AsyncWebClient | None = None) -> None:
        self.settings = settings
        self.pacer = pacer
        self.client = client or web_client(settings)

    async def deliver(self, question: Question, answer: Answer) -> dict[str, Any]:
        message = render_answer(answer, ask_a_human=bool(self.settings.slack_support_channel))
        return await self._send(question, message)

    async def deliver_failure(self, question: Question, message: str) -> None:
        result = await self._send(question, render_notice(message))
        if "error" in result:
            log.error("slack.failure_notice_undelivered", error=result["error"])

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
                    if exc.response.get("error") not in _GONE:
                        raise
                    log.warning("slack.placeholder_gone", error=exc.response.get("error"))
            await self.pacer.wait(channel)
            response = await self.client.chat_postMessage(channel=channel, thread_ts=target.get("thread_ts"),
                                                          **message)
            return {"method": "chat.postMessage", "channel": channel, "ts": response.get("ts")}
        except SlackApiError as exc:
            error = str(exc.response.get("error") or exc.response.status_code)
            log.error("slack.delivery_failed", channel=channel, error=error)
            return {"error": error, "channel": channel}
        except Exception as exc:  # noqa: BLE001 - network trouble after the client's own retries
            log.error("slack.delivery_failed", channel=channel, error=repr(exc))
            return {"error": repr(exc)[:300], "channel": channel}

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
