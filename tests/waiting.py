"""Polling in tests: wait until something another task or process does has happened."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_until(probe: Callable[[], Awaitable[T | None]], *, timeout_s: float = 10.0,
                     interval_s: float = 0.05, what: str = "the condition") -> T:
    """The first truthy result of the async ``probe``, called every ``interval_s`` seconds.

    Each round calls the probe, then looks at the deadline (``time.monotonic``), then sleeps: the probe is always
    called once after the deadline has passed, so a condition that turns true right at the end is not missed.
    Raises :class:`TimeoutError` naming ``what`` when ``timeout_s`` seconds pass without a truthy result.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout_s} s")
        await asyncio.sleep(interval_s)
