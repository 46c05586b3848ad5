"""Slack's events, acknowledged at the door and handed to intake through a Redis stream.

Slack waits at most 3 s for an event's 200, and retries an event it did not get one for. Through bolt, each
acknowledgement cost the web process about half a millisecond of its event loop, and that loop also ran the intake
work after every ack (claim, placeholder, record, enqueue: ~7 ms of CPU per event). With 200 events arriving at
once, the last ones waited ~110 ms for their 200 (``bench/bench_slack_ack.py``). And an event acknowledged but not
yet recorded was lost if its web process died: Slack does not resend what it got a 200 for.

**The door** (:meth:`SlackInbox.accept`, called by :mod:`bot.slack.http` once the signature is checked, and by
:mod:`bot.slack.socket_mode` for an ``events_api`` envelope): an ``event_callback`` body is appended to the stream
``deskmate:slack:inbox`` (``XADD``) and answered 200 (or acked on the socket) at once.
Everything else goes to bolt as before: the URL check, slash commands, clicks, bodies that are not events. Every
event also goes to bolt while Redis cannot take it. Bolt then acks it and hands it over in the same process, as it
always did.

**The consumers** (:meth:`SlackInbox.run`). Every web process that serves Slack (and ``deskmate slack socket``)
runs one, all in one consumer group. A consumer reads an entry and dispatches it through a bolt app that runs the listener to its end
before returning (``process_before_response``; the signature was checked at the door). Only then does it ``XACK``
and ``XDEL`` the entry. So an event leaves the stream once intake has it: recorded and enqueued, or — on its last
try — the user told that it could not be (before that, a question the database cannot take is tried again:
``bot.slack.adapter.RecordLater``).

**Faults.**

- A consumer that stops without finishing an entry (a crash, a kill, a dispatch that failed) leaves it pending.
  Any consumer takes it over once it has been idle ``RECLAIM_IDLE_S``.
- Before a taken-over entry is dispatched, its intake claim is released. Intake then goes on to the database's
  unique key, which still answers the event once.
- A dispatch still running after ``DISPATCH_TIMEOUT_S`` (intake waiting on something that never answers) is
  stopped, and its entry left for another attempt.
- An entry that failed ``MAX_DELIVERIES`` times is moved to ``deskmate:slack:inbox:dead``: kept and logged, not
  retried for ever.
- A web process that stops finishes the entries it holds (up to ``CLOSE_GRACE_S``). It leaves the rest in the
  stream for the others, or for itself once restarted.
- A restarted process reads under a new name. Names that hold nothing and have read nothing for
  ``DEPARTED_IDLE_S`` are removed from the group (:func:`forget_departed`), so the group lists the living.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.core.log import get_logger
from bot.intake import Intake
from bot.slack.adapter import INBOX_TRIES_LEFT
from bot.slack.listeners import event_key

log = get_logger(__name__)

STREAM = "deskmate:slack:inbox"
DEAD = "deskmate:slack:inbox:dead"
GROUP = "intake"
#: Entries one consumer works on at once (intake's own bound, ``bot.slack.adapter.INTAKE_SLOTS``, still holds).
SLOTS = 8
#: How long a read waits for a new entry before the consumer looks at its other duties again.
READ_BLOCK_MS = 1000
#: An entry pending this long belongs to a consumer that stopped (intake takes milliseconds to seconds).
RECLAIM_IDLE_S = 60.0
RECLAIM_EVERY_S = 15.0
MAX_DELIVERIES = 5
#: Intake takes milliseconds, seconds when Slack or the database is slow (the Web API client gives up after 30 s).
#: A dispatch still running after this is stopped and its entry left for another attempt: a hung dependency (a
#: query that never returns) cannot hold one of the consumer's slots for ever.
DISPATCH_TIMEOUT_S = 120.0
#: A consumer with nothing pending that has not read an entry for this long is a web process gone (a restarted
#: process reads under a new name): it is removed from the group, looked for every ``FORGET_EVERY_S``. A living
#: process that was merely quiet is named again by its next read.
DEPARTED_IDLE_S = 3600.0
FORGET_EVERY_S = 600.0
#: The door gives Redis this long; then the event goes to bolt in this process.
ACCEPT_TIMEOUT_S = 0.5
#: After Redis failed at the door, events go straight to bolt for this long.
DOOR_BACKOFF_S = 5.0
CLOSE_GRACE_S = 10.0
#: The request headers bolt reads from an event besides its body.
FORWARDED_HEADERS = ("content-type", "x-slack-retry-num", "x-slack-retry-reason")

#: Remove the group's consumers that hold no entry and are idle past ARGV[3] ms, except ARGV[2] (the caller), in
#: one step: a consumer cannot take an entry between the look and the removal (which would drop it from the
#: pending list, out of reach of a takeover).
_FORGET_DEPARTED = """
local removed = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local field = {}
  for i = 1, #consumer, 2 do field[consumer[i]] = consumer[i + 1] end
  if field['name'] ~= ARGV[2] and tonumber(field['pending']) == 0 and tonumber(field['idle']) > tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], field['name'])
    removed = removed + 1
  end
end
return removed
"""

Dispatch = Callable[[AsyncBoltRequest], Awaitable[BoltResponse]]
Entry = tuple[bytes, dict[bytes, bytes]]


def consumer_name() -> str:
    """This process's name in the consumer group: host, pid, and a suffix that differs after a restart."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class SlackInbox:
    def __init__(self, redis: Redis, dispatch: Dispatch, intake: Intake, *, consumer: str | None = None) -> None:
        self.redis = redis
        self.dispatch = dispatch
        self.intake = intake
        self.consumer = consumer or consumer_name()
        self.slots = SLOTS
        self.reclaim_idle_s = RECLAIM_IDLE_S
        self.reclaim_every_s = RECLAIM_EVERY_S
        self.max_deliveries = MAX_DELIVERIES
        self.dispatch_timeout_s = DISPATCH_TIMEOUT_S
        self.departed_idle_s = DEPARTED_IDLE_S
        self.forget_every_s = FORGET_EVERY_S
        self._door_closed_until = 0.0
        self._appender = _Appender(redis)
        self._group_ready = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._handling: set[bytes] = set()
        self._reader: asyncio.Task[None] | None = None
        self._closing = False

    # --- the door ---------------------------------------------------------------------------------------
    async def accept(self, raw: bytes, headers: Mapping[str, str]) -> bool:
        """Keep a signed event (an ``event_callback`` body bolt can read: the caller checked both) for the
        consumers. False when Redis cannot take it: then bolt handles the event in this process."""
        if time.monotonic() < self._door_closed_until:
            return False
        fields: dict[str, bytes | str] = {"body": raw}
        for name in FORWARDED_HEADERS:
            value = headers.get(name)
            if value is not None:
                fields[name] = value
        try:
            await self._appender.append(fields)
        except (RedisError, OSError, TimeoutError) as exc:
            self._door_closed_until = time.monotonic() + DOOR_BACKOFF_S
            log.warning("slack.inbox_unavailable", error=repr(exc)[:200], retry_in_s=DOOR_BACKOFF_S)
            return False
        return True

    # --- the consumer -----------------------------------------------------------------------------------
    def start(self) -> None:
        self._closing = False
        self._reader = asyncio.create_task(self.run(), name="slack-inbox")

    async def close(self, grace_s: float = CLOSE_GRACE_S) -> None:
        """Stop reading (the read under way ends within ``READ_BLOCK_MS``, and what it brought is handled), then
        finish the entries this process holds, for at most ``grace_s`` in all. Unfinished ones stay pending for
        another consumer; unread ones stay in the stream."""
        deadline = time.monotonic() + grace_s
        self._closing = True
        if self._reader is not None:
            done, _ = await asyncio.wait({self._reader}, timeout=READ_BLOCK_MS / 1000 + 1)
            if not done:
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader
        if self._tasks:
            log.info("slack.inbox_draining", entries=len(self._tasks))
            _, unfinished = await asyncio.wait(self._tasks, timeout=max(0.0, deadline - time.monotonic()))
            for task in unfinished:
                task.cancel()
            if unfinished:
                log.warning("slack.inbox_left_pending", entries=len(unfinished))

    async def run(self) -> None:
        """Read and dispatch entries until :meth:`close`; Redis being away is waited out."""
        next_reclaim = 0.0
        next_forget = time.monotonic() + self.forget_every_s
        failures = 0
        while not self._closing:
            try:
                free = self.slots - len(self._tasks)
                if free <= 0:
                    await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                    continue
                await self._ensure_group()
                if time.monotonic() >= next_reclaim:
                    next_reclaim = time.monotonic() + self.reclaim_every_s
                    for entry in await self._reclaim(free):
                        self._start(entry, reclaimed=True)
                    continue
                if time.monotonic() >= next_forget:
                    next_forget = time.monotonic() + self.forget_every_s
                    forgotten = await forget_departed(self.redis, self.consumer, self.departed_idle_s)
                    if forgotten:
                        log.info("slack.inbox_consumers_forgotten", consumers=forgotten)
                    continue
                for entry in await self._read(free):
                    self._start(entry, reclaimed=False)
                failures = 0
            except (RedisError, OSError) as exc:
                failures += 1
                self._group_ready = False
                log.warning("slack.inbox_read_failed", error=repr(exc)[:200], failures=failures)
                await asyncio.sleep(min(0.5 * 2 ** min(failures, 5), 10.0))

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def _read(self, count: int) -> list[Entry]:
        try:
            answer = await self.redis.xreadgroup(GROUP, self.consumer, {STREAM: ">"}, count=count,
                                                 block=READ_BLOCK_MS)
        except ResponseError as exc:
            # the stream or the group went away (Redis flushed; "UNBLOCKED" when it happened during the read):
            # create them again
            if "NOGROUP" in str(exc) or "UNBLOCKED" in str(exc):
                self._group_ready = False
                return []
            raise
        return [entry for _stream, entries in answer or [] for entry in entries]

    async def _reclaim(self, count: int) -> list[Entry]:
        """Entries another consumer took and has not finished within ``reclaim_idle_s``."""
        answer: Any = await self.redis.xautoclaim(STREAM, GROUP, self.consumer, int(self.reclaim_idle_s * 1000),
                                                  start_id="0-0", count=count)
        entries: list[Entry] = answer[1]
        return entries

    def _start(self, entry: Entry, *, reclaimed: bool) -> None:
        entry_id = entry[0]
        if entry_id in self._handling:  # this consumer's own slow entry, idle past reclaim_idle_s: still on it
            return
        self._handling.add(entry_id)
        task = asyncio.create_task(self._handle(entry, reclaimed=reclaimed))
        self._tasks.add(task)

        def finished(done: asyncio.Task[None]) -> None:
            self._tasks.discard(done)
            self._handling.discard(entry_id)

        task.add_done_callback(finished)

    async def _handle(self, entry: Entry, *, reclaimed: bool) -> None:
        entry_id, fields = entry
        raw = fields.get(b"body")
        if raw is None:  # an entry deleted while pending: nothing left to do
            await self._done(entry_id)
            return
        try:
            deliveries = 1
            if reclaimed:
                deliveries = await self._deliveries(entry_id)
                if deliveries > self.max_deliveries:
                    await self._bury(entry_id, fields)
                    return
                await self._release_claim(raw)
            request = self._request(raw, fields)
            # a listener that fails leaves the entry here; intake knows whether this is the last try
            tries_left = INBOX_TRIES_LEFT.set(max(0, self.max_deliveries - deliveries))
            try:
                response = await asyncio.wait_for(self.dispatch(request), self.dispatch_timeout_s)
            finally:
                INBOX_TRIES_LEFT.reset(tries_left)
        except Exception as exc:  # noqa: BLE001 - left pending: another attempt after reclaim_idle_s
            log.error("slack.inbox_event_failed", entry=entry_id.decode(), error=repr(exc)[:300])
            return
        # bolt could not run it now: an error status, or no authorization (bolt answers a failed auth.test with a
        # 200 and a message for a user who is not there). Left pending: another attempt after reclaim_idle_s
        if not 200 <= response.status < 300 or request.context.authorize_result is None:
            log.error("slack.inbox_event_failed", entry=entry_id.decode(), status=response.status,
                      authorized=request.context.authorize_result is not None)
            return
        await self._done(entry_id)

    @staticmethod
    def _request(raw: bytes, fields: dict[bytes, bytes]) -> AsyncBoltRequest:
        headers: dict[str, str | Sequence[str]] = {
            name.decode(): [value.decode()] for name, value in fields.items() if name != b"body"}
        return AsyncBoltRequest(body=raw.decode("utf-8"), headers=headers)

    async def _release_claim(self, raw: bytes) -> None:
        """Forget intake's claim on a taken-over event: the consumer that claimed it may have stopped before
        recording it. If it did record it, the database's unique key stops the second answer."""
        body = orjson.loads(raw)
        event = body.get("event")
        await self.intake.release_claim(event_key(body, event if isinstance(event, dict) else {}))

    async def _deliveries(self, entry_id: bytes) -> int:
        pending = await self.redis.xpending_range(STREAM, GROUP, min=entry_id, max=entry_id, count=1)
        return int(pending[0]["times_delivered"]) if pending else 0

    async def _done(self, entry_id: bytes) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xack(STREAM, GROUP, entry_id)
                pipe.xdel(STREAM, entry_id)
                await pipe.execute()
        except (RedisError, OSError) as exc:  # handed over but still pending: taken over later, answered once
            log.warning("slack.inbox_ack_failed", entry=entry_id.decode(), error=repr(exc)[:200])

    async def _bury(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        body = orjson.loads(fields[b"body"])
        log.error("slack.inbox_dead", entry=entry_id.decode(), event_id=body.get("event_id"),
                  deliveries=self.max_deliveries, stream=DEAD)
        await self.redis.xadd(DEAD, {**fields, b"entry": entry_id})  # type: ignore[dict-item]
        await self._done(entry_id)


class _Appender:
    """The door's ``XADD``s, sent together: the events that arrive while one pipeline is on its way go in the
    next. One ``XADD`` on its own cost ~65 µs of CPU (~135 µs with 200 requests at once, each holding a pool
    connection); in a pipeline ~10 µs. Each caller still waits until its own entry is in Redis."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._waiting: list[tuple[dict[str, bytes | str], asyncio.Future[None]]] = []
        self._sending: asyncio.Task[None] | None = None

    async def append(self, fields: dict[str, bytes | str]) -> None:
        """Returns once the entry is in the stream; raises what Redis raised (or ``TimeoutError``)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((fields, future))
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(self._send())
        await future

    async def _send(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                async with asyncio.timeout(ACCEPT_TIMEOUT_S):
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for fields, _ in batch:
                            pipe.xadd(STREAM, fields)  # type: ignore[arg-type]
                        results = await pipe.execute(raise_on_error=False)
            except (RedisError, OSError, TimeoutError) as exc:
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # its request went away
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(None)


async def status(redis: Redis) -> dict[str, int]:
    """For an operator (``deskmate slack inbox``): events waiting to be read, read but not yet handed over (a
    consumer is on them, or stopped on them), and set aside after ``MAX_DELIVERIES``."""
    waiting = await redis.xlen(STREAM)
    try:
        pending = int((await redis.xpending(STREAM, GROUP))["pending"])
    except ResponseError:  # no consumer group yet: no web process has read the inbox
        pending = 0
    return {"waiting": waiting - pending, "in_hand": pending, "set_aside": await redis.xlen(DEAD)}


async def forget_departed(redis: Redis, keep: str, idle_s: float) -> int:
    """Remove the consumers of web processes gone (nothing pending, no entry read for ``idle_s``) from the group,
    except ``keep``; returns how many. Entries a departed process still held are taken over first (after
    ``RECLAIM_IDLE_S``), so its name goes only once they are someone else's."""
    try:
        return int(await redis.eval(_FORGET_DEPARTED, 1, STREAM, GROUP, keep, str(int(idle_s * 1000))))  # type: ignore[misc]
    except ResponseError as exc:
        if "no such key" in str(exc).lower() or "NOGROUP" in str(exc):  # no inbox yet (or Redis was flushed)
            return 0
        raise


async def figures(redis: Redis) -> list[Metric]:
    """The inbox in the web process's ``/metrics``: its events by state (:func:`status`), and the age of the oldest
    one still in it (0 when empty) — an intake that stopped handing events over shows as a growing age."""
    counts = await status(redis)
    events = GaugeMetricFamily("deskmate_slack_inbox_events",
                               "Slack events acknowledged at the door and not yet handed to intake: waiting, in a "
                               "web process's hands, or set aside after failing (deskmate slack inbox).",
                               labels=["state"])
    for state, count in counts.items():
        events.add_metric([state], count)
    oldest = await redis.xrange(STREAM, count=1)
    age = GaugeMetricFamily("deskmate_slack_inbox_oldest_event_age_seconds",
                            "Age of the oldest event in the Slack inbox, waiting or in hand (0 when empty).")
    age.add_metric([], max(0.0, time.time() - _entry_ms(oldest[0][0]) / 1000) if oldest else 0.0)
    return [events, age]


def _entry_ms(entry_id: bytes | str) -> int:
    """When a stream entry was added: its id is ``<milliseconds>-<sequence>``."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


async def retry_set_aside(redis: Redis) -> int:
    """Put every set-aside event back in the inbox (once the cause is fixed); returns how many."""
    moved = 0
    for entry_id, fields in await redis.xrange(DEAD):
        kept = {name: value for name, value in fields.items() if name != b"entry"}
        async with redis.pipeline(transaction=True) as pipe:
            pipe.xadd(STREAM, kept)  # type: ignore[arg-type]
            pipe.xdel(DEAD, entry_id)
            await pipe.execute()
        moved += 1
    return moved

