"""The event loop of the web process: uvloop by default (``DESKMATE_EVENT_LOOP``).

uvloop runs asyncio's loop on libuv: the same API, with the loop's own work — sockets, timers, callbacks — in C.
Installed as the event-loop *policy*, so that ``asyncio.run`` gets one. The worker keeps asyncio's own loop: under
uvloop, a worker with 50 answers in flight stalled for good in this project's benchmark (every answer waiting on
the model's stream, the loop idle; docs/benchmarks.md) — not investigated further.
"""

from __future__ import annotations

import asyncio
import importlib
from types import ModuleType

from bot.core.log import get_logger
from bot.core.settings import Settings

log = get_logger(__name__)


def use_configured_loop(settings: Settings) -> str:
    """Install the configured event loop policy for this process; returns the loop in use ("uvloop" or
    "asyncio": uvloop asked for but not installed falls back to asyncio's, with a warning)."""
    if settings.event_loop == "uvloop":
        try:
            uvloop: ModuleType = importlib.import_module("uvloop")  # not on Windows
        except ImportError:
            log.warning("loop.uvloop_missing", hint="pip install uvloop, or DESKMATE_EVENT_LOOP=asyncio")
            return "asyncio"
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return "uvloop"
    return "asyncio"
