"""HTTP for connectors: one :class:`httpx.Client` with the manners every remote source needs.

- ``429 Too Many Requests`` and ``503 Service Unavailable`` are retried after their ``Retry-After`` (seconds or
  an HTTP date; exponential back-off without one) up to ``max_retries`` times; a ``Retry-After`` longer than
  ``max_retry_after_s`` gives up at once rather than hold the sync for hours.
- An optional minimum interval between requests (a website's robots.txt ``Crawl-delay``).
- A transport failure (refused, reset, timed out) is a :class:`~knowledge.connectors.base.FetchError` naming the
  URL without its query string; the caller decides whether that fails one document or the whole source.

Connectors pass their vendor's base URL, so tests point them at a local server speaking the vendor's wire format.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from bot.core.log import get_logger
from knowledge.connectors.base import FetchError, HttpSource

log = get_logger(__name__)

RETRIED_STATUSES = (429, 503)


def retry_after_seconds(value: str | None, default: float = 1.0) -> float:
    """A ``Retry-After`` header's wait in seconds (delta-seconds or an HTTP date); ``default`` when absent or
    unreadable."""
    if not value:
        return default
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


def without_query(url: str) -> str:
    """``url`` as it may be logged or shown: no query string (it can hold tokens or cursors), no credentials."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class HttpClient:
    def __init__(self, *, source: str, headers: Mapping[str, str] | None = None, base_url: str = "",
                 timeout_s: float = 30.0, max_retries: int = 3, max_retry_after_s: float = 120.0,
                 min_interval_s: float = 0.0, follow_redirects: bool = True,
                 sleep: Callable[[float], None] = time.sleep, transport: httpx.BaseTransport | None = None,
                 auth: httpx.Auth | None = None) -> None:
        self.source = source
        self.max_retries = max_retries
        self.max_retry_after_s = max_retry_after_s
        #: Seconds kept between two requests (e.g. robots.txt's Crawl-delay); may be changed after creation.
        self.min_interval_s = min_interval_s
        self._sleep = sleep
        self._last_request = 0.0
        self._client = httpx.Client(base_url=base_url, headers=dict(headers or {}), timeout=timeout_s,
                                    follow_redirects=follow_redirects, transport=transport, auth=auth)

    @classmethod
    def for_source(cls, source: HttpSource, **kwargs: Any) -> HttpClient:
        """A client with ``source``'s timeout and retry settings (``kwargs``: the other arguments)."""
        return cls(source=source.name, timeout_s=source.timeout_s, max_retries=source.max_retries,
                   max_retry_after_s=source.max_retry_after_s, **kwargs)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send, honouring the minimum interval and retrying 429/503 after ``Retry-After``. Returns the last
        response whatever its status (the caller reads 4xx/5xx); raises FetchError on a transport failure, or
        when the server asks to wait longer than ``max_retry_after_s``."""
        response: httpx.Response | None = None
        for attempt in range(self.max_retries + 1):
            wait = self.min_interval_s - (time.monotonic() - self._last_request)
            if wait > 0:
                self._sleep(wait)
            self._last_request = time.monotonic()
            try:
                response = self._client.request(method, url, **kwargs)
            except httpx.HTTPError as exc:
                raise FetchError(f"{exc.__class__.__name__} requesting {without_query(str(url))}") from exc
            if response.status_code not in RETRIED_STATUSES or attempt == self.max_retries:
                return response
            delay = retry_after_seconds(response.headers.get("Retry-After"), default=2.0 ** attempt)
            if delay > self.max_retry_after_s:
                raise FetchError(f"HTTP {response.status_code}: Retry-After {delay:.0f} s is longer than "
                                 f"max_retry_after_s ({self.max_retry_after_s:g})")
            log.info("source.http.retry_after", source=self.source, status=response.status_code,
                     seconds=round(delay, 2), attempt=attempt + 1)
            self._sleep(delay)
        assert response is not None
        return response

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def close(self) -> None:
        self._client.close()
