"""The Slack Web API client every part of the adapter uses: our base URL, and 429s waited out.

Slack answers a rate-limited call with HTTP 429 and ``Retry-After`` (seconds). slack_sdk's
``AsyncRateLimitErrorRetryHandler`` waits that long and retries; ours also reads fractional values, adds a
little jitter instead of up to a whole second, and gives up on waits longer than
``slack_max_retry_after_s`` (a worker slot is worth more than a message that late).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.core.log import get_logger
from bot.core.settings import Settings

log = get_logger(__name__)


def retry_after_s(response: HttpResponse | None) -> float | None:
    if response is None:
        return None
    for name, values in response.headers.items():
        if name.lower() == "retry-after" and values:
            try:
                return max(0.0, float(values[0]))
            except ValueError:
                return None
    return None


class RetryAfterHandler(AsyncRateLimitErrorRetryHandler):
    """Retry a 429 after its ``Retry-After``, unless that is longer than ``max_wait_s``."""

    def __init__(self, max_retry_count: int = 3, max_wait_s: float = 60.0) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait_s = max_wait_s

    async def _can_retry_async(self, *, state: RetryState, request: HttpRequest,
                               response: HttpResponse | None = None, error: Exception | None = None) -> bool:
        if response is None or response.status_code != 429:
            return False
        wait = retry_after_s(response)
        if wait is not None and wait > self.max_wait_s:
            log.warning("slack.rate_limited_too_long", url=request.url, retry_after_s=wait)
            return False
        return True

    async def prepare_for_next_attempt_async(self, *, state: RetryState, request: HttpRequest,
                                             response: HttpResponse | None = None,
                                             error: Exception | None = None) -> None:
        wait = retry_after_s(response)
        wait = 1.0 if wait is None else wait
        log.info("slack.rate_limited", url=request.url, retry_after_s=wait, attempt=state.current_attempt + 1)
        state.next_attempt_requested = True
        await asyncio.sleep(wait + random.uniform(0, min(0.25, 0.1 * wait + 0.05)))
        state.increment_current_attempt()


def retry_handlers(settings: Settings) -> list[AsyncRetryHandler]:
    return [AsyncConnectionErrorRetryHandler(max_retry_count=2),
            RetryAfterHandler(settings.slack_rate_limit_retries, settings.slack_max_retry_after_s)]


def web_client(settings: Settings, *, token: str | None = None, **kwargs: Any) -> AsyncWebClient:
    return AsyncWebClient(token=token or settings.slack_bot_token, base_url=settings.slack_api_url,
                          retry_handlers=retry_handlers(settings), timeout=15, **kwargs)


def webhook_client(settings: Settings, url: str) -> AsyncWebhookClient:
    """For ``response_url`` posts (slash commands, buttons): the same 429 handling."""
    return AsyncWebhookClient(url, timeout=15, retry_handlers=retry_handlers(settings))


def ensure_session(client: AsyncWebClient, timeout_s: float = 15.0) -> None:
    """Give the client one pooled aiohttp session (slack_sdk opens a new one per call otherwise).
    Must run inside the event loop; close it with :func:`close_session`."""
    if client.session is None or client.session.closed:
        client.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))


async def close_session(client: AsyncWebClient) -> None:
    if client.session is not None and not client.session.closed:
        await client.session.close()
    client.session = None
