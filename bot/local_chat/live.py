"""The local chat's live answers: the worker writes an answer's progress into a Redis stream, the web page (over
Server-Sent Events) and the terminal read it as it comes.

Worker side: :class:`LocalDeliverer` is the local chat's :class:`~bot.delivery.StreamingDeliverer`. Its
:class:`LocalAnswerStream` appends events to ``deskmate:local:live:<idempotency key>`` (``XADD``, trimmed, kept
:data:`LIVE_TTL_S`): ``status`` ("Searching the handbook…", "Writing…"), ``text`` (more answer text, coalesced to
at most one event every :data:`FLUSH_S`), then ``end`` once the answer is recorded. Nothing else is delivered: the
page and the terminal read the recorded answer — its sources, label and votes — when they see ``end``.

Reader side: :func:`follow` yields the events of one question (``XREAD BLOCK``), for
``GET /chat/api/interactions/<id>/stream`` (:mod:`bot.local_chat.web`) and ``deskmate chat``
(:mod:`bot.local_chat.terminal`). A reader that comes late reads the stream from its start.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.core.log import get_logger
from bot.core.types import Answer, Question

log = get_logger(__name__)

LIVE_TTL_S = 600
FLUSH_S = 0.1
MAX_EVENTS = 2000


def live_key(idempotency_key: str) -> str:
    return f"deskmate:local:live:{idempotency_key}"


@dataclass(frozen=True)
class LiveEvent:
    kind: str  # "status" | "text" | "end"
    text: str = ""


class LocalAnswerStream:
    def __init__(self, redis: Redis, question: Question) -> None:
        self.redis = redis
        self.key = live_key(question.idempotency_key)
        self._buffer = ""
        self._flushed_at = 0.0
        self._expire_set_at = -float(LIVE_TTL_S)  # the first event sets the expiry
        self._refs: dict[str, Any] = {}

    @property
    def refs(self) -> dict[str, Any]:
        return dict(self._refs)

    async def _add(self, kind: str, text: str = "") -> None:
        """One event: ``XADD`` alone, one round trip. The key's expiry is set with the stream's first event and
        its last (``end``: a reader may come up to :data:`LIVE_TTL_S` after the answer), and renewed on the way
        if the answer takes longer than half of it (``XADD`` keeps a key's TTL)."""
        fields = {"kind": kind, "text": text}
        now = time.monotonic()
        try:
            if kind == "end" or now - self._expire_set_at >= LIVE_TTL_S / 2:
                async with self.redis.pipeline(transaction=False) as pipe:  # one round trip
                    pipe.xadd(self.key, fields, maxlen=MAX_EVENTS, approximate=True)  # type: ignore[arg-type]
                    pipe.expire(self.key, LIVE_TTL_S)
                    await pipe.execute()
                self._expire_set_at = now
            else:
                await self.redis.xadd(self.key, fields, maxlen=MAX_EVENTS, approximate=True)  # type: ignore[arg-type]
        except (RedisError, OSError) as exc:  # the page falls back to reading the recorded answer
            log.warning("local_chat.live_unavailable", error=str(exc)[:200])
            return
        self._refs = {"method": "local.live", "key": self.key}

    async def _flush(self) -> None:
        if self._buffer:
            text, self._buffer = self._buffer, ""
            self._flushed_at = time.monotonic()
            await self._add("text", text)

    async def status(self, text: str) -> None:
        await self._add("status", text)

    async def append(self, text: str) -> None:
        self._buffer += text
        if time.monotonic() - self._flushed_at >= FLUSH_S:
            await self._flush()

    async def finish(self, answer: Answer) -> dict[str, Any]:
        await self._flush()
        await self._add("end")
        return self.refs

    async def abandon(self, text: str) -> dict[str, Any]:
        self._buffer = ""
        await self._add("end")
        return self.refs


class LocalDeliverer:
    """The local chat's deliverer: streams live answers; the answer itself is read back from the database."""

    def __init__(self, redis: Redis, *, streaming: bool = True) -> None:
        self.redis = redis
        #: False (``DESKMATE_STREAMING=off``): no live text; the page and terminal get only ``end``, then the answer
        self.streaming = streaming

    async def open_stream(self, question: Question) -> LocalAnswerStream | None:
        return LocalAnswerStream(self.redis, question) if self.streaming else None

    async def deliver(self, question: Question, answer: Answer) -> dict[str, Any]:
        return await LocalAnswerStream(self.redis, question).finish(answer)

    async def deliver_failure(self, question: Question, message: str) -> dict[str, Any]:
        return await LocalAnswerStream(self.redis, question).abandon(message)

    async def aclose(self) -> None:
        return None


async def follow(redis: Redis, idempotency_key: str, *, block_ms: int = 1000,
                 timeout_s: float = 180.0) -> AsyncIterator[LiveEvent | None]:
    """The question's live events from the start, as they come; ``None`` after each ``block_ms`` without one (the
    caller may check the recorded answer then). Ends after ``end`` or ``timeout_s``."""
    key = live_key(idempotency_key)
    last = "0-0"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = await redis.xread({key: last}, block=block_ms, count=100)
        except (RedisError, OSError) as exc:
            log.warning("local_chat.live_read_failed", error=str(exc)[:200])
            yield None
            continue
        if not found:
            yield None
            continue
        for _stream, entries in found:
            for entry_id, fields in entries:
                last = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                kind = _str(fields.get(b"kind", fields.get("kind", "")))
                event = LiveEvent(kind, _str(fields.get(b"text", fields.get("text", ""))))
                yield event
                if kind == "end":
                    return


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")
