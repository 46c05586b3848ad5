"""The event loop of the web and worker processes: uvloop by default (``DESKMATE_EVENT_LOOP``).

uvloop runs asyncio's loop on libuv: the same API, with the loop's own work — sockets, timers, callbacks — in C.
A worker holding hundreds of answers in flight spends much of its CPU there (docs/benchmarks.md). Installed as
the event-loop *policy*, so that ``asyncio.run`` and arq's worker (which creates its loop at construction)
both get one.
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
