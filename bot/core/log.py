"""Structured logging (structlog): JSON lines in production, readable console output in development.

Bind the interaction id with ``structlog.contextvars.bind_contextvars(interaction_id=...)`` and every line the
job writes carries it. Users' message text stays out of logs unless ``DESKMATE_LOG_MESSAGE_TEXT`` is on; use
:func:`redact` for any value that may hold it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog

from bot.core.settings import Settings

_log_message_text = False


def _orjson_dumps(value: Any, **_: Any) -> str:
    """JSON log lines with orjson (several times the standard library's speed; a worker writes a few lines per
    answer). Values it cannot encode are written as their ``str``, as the standard renderer does."""
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def configure_logging(settings: Settings) -> None:
    global _log_message_text
    _log_message_text = settings.log_message_text
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "json" if settings.environment == "production" else "console"
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps) if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        # JSON has no way to print a traceback object: render it as text under "exception"
                        # (the console renderer prints exc_info itself, with colours off)
                        *([structlog.processors.format_exc_info] if fmt == "json" else []),
                        renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    noisy_loggers = ("httpx", "httpcore", "httpx2", "httpcore2", "chromadb", "urllib3", "arq.worker", "alembic", "opentelemetry", "bm25s",
                     "aiosqlite")  # aiosqlite logs SQL parameters, which hold message text
    for noisy in noisy_loggers:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def redact(text: str | None) -> str:
    """Message text as it may appear in logs: itself when allowed, else only its length."""
    if text is None:
        return ""
    return text if _log_message_text else f"<{len(text)} chars>"


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
