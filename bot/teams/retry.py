"""Retrying Bot Framework connector calls: 429 (throttled), 412 (Teams' "precondition failed, try again"), 5xx
and connection errors are transient; everything else (400, 401, 403, 404…) is not.

Delays double from ``backoff_s`` (capped at 30 s) with jitter, and a ``Retry-After`` header wins when present; a
``Retry-After`` longer than 30 s is not waited out in the call: the error is raised at once, and the worker's
delivery step defers its next attempt by that long (:meth:`bot.pipeline.AnswerPipeline.deliver`). That step is
what retries beyond these few quick tries, for as long as ``DESKMATE_DELIVERY_DEADLINE_S``.
The connector client's own urllib3 retries (3 tries with 0.8 s backoff on 5xx, blind to ``Retry-After`` and to
429/412) are switched off with :func:`own_retries`, so that this module is the one in-call retry policy.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from msrest.exceptions import ClientRequestError, DeserializationError, HttpOperationError

from bot.core.log import get_logger

log = get_logger(__name__)

T = TypeVar("T")

RETRY_STATUSES = frozenset({412, 429, 500, 502, 503, 504})
MAX_DELAY_S = 30.0


def own_retries(connector: Any) -> Any:
    """Turn off msrest's built-in retries on a ``ConnectorClient`` (before its first request)."""
    policy = getattr(getattr(connector, "config", None), "retry_policy", None)
    if policy is not None:
        policy.retries = 0
        policy.policy.status_forcelist = set()
    return connector


def status_of(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None) or getattr(response, "status", None)
    return int(status) if isinstance(status, int) else None


def retry_after_s(exc: BaseException) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def html_error_page(exc: BaseException) -> bool:
    """msrest could not read the answer because it was an HTML page — a gateway's error page (a 5xx), raised
    before the status is looked at: transient like the 5xx it stands for."""
    return isinstance(exc, DeserializationError) and "text/html" in str(exc)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, HttpOperationError):
        return status_of(exc) in RETRY_STATUSES
    return isinstance(exc, (ClientRequestError, ConnectionError, asyncio.TimeoutError)) or html_error_page(exc)


def retryable_later(exc: BaseException) -> bool:
    """Can a later delivery attempt succeed? Transient errors, and anything that is not an HTTP answer (an
    unexpected error is retried until the delivery deadline); an HTTP 4xx other than 412/429 is final."""
    if isinstance(exc, HttpOperationError):
        return status_of(exc) in RETRY_STATUSES or status_of(exc) is None
    return True


def describe(exc: BaseException) -> str:
    if html_error_page(exc):
        return f"an HTML error page instead of a response ({exc})"[:300]
    status = status_of(exc)
    return f"HTTP {status}: {exc}"[:300] if status else f"{exc.__class__.__name__}: {exc}"[:300]


async def with_retries(call: Callable[[], Awaitable[T]], *, attempts: int, backoff_s: float, what: str,
                       on_retry: Callable[[int, BaseException], None] | None = None) -> T:
    """Run ``call`` until it succeeds, a non-transient error occurs, or ``attempts`` are used up (then re-raise)."""
    attempts = max(1, attempts)
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except Exception as exc:
            if attempt >= attempts or not is_transient(exc):
                raise
            delay = retry_after_s(exc)
            if delay is not None and delay > MAX_DELAY_S:
                raise  # too long to hold the call: the caller defers its next attempt by Retry-After
            if delay is None:
                delay = min(MAX_DELAY_S, backoff_s * 2 ** (attempt - 1)) * (0.8 + 0.4 * random.random())
            log.warning("teams.retry", what=what, attempt=attempt, delay_s=round(delay, 2), error=describe(exc))
            if on_retry is not None:
                on_retry(attempt, exc)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")
