"""A circuit breaker whose state lives in Redis, so every worker process sees the same circuit.

closed ──(``threshold`` consecutive failures)──▶ open ──(``cooldown_s``)──▶ half_open
half_open: one trial call is let through; its success closes the circuit, its failure re-opens it.

Keys (``deskmate:breaker:<name>`` prefix):

- ``…`` (a hash): ``failures`` — consecutive failures while closed; ``tripped`` — 1 once the circuit opened
  and until a success closes it.
- ``…:open`` — exists while the circuit is open; it expires after the cool-down, so Redis's own clock decides
  when the circuit half-opens and the workers' clocks never have to agree.
- ``…:trial`` — the half-open trial lease (``SET NX`` with a TTL): one process makes the trial call.
  The TTL frees the lease if that process dies mid-call.

The transitions run as Lua scripts, atomic across processes. If Redis itself fails or is slow, the breaker
lets calls through (fails open) and logs: losing the breaker must not take answering down with it.

A call costs one round trip while the circuit is clean (closed, no failure counted): :meth:`CircuitBreaker.allow`
says so, and the call's success (recorded in the same task) is then not written — it would delete nothing. A
failure counted by another call meanwhile is reset by the next success of a call that started after it.
"""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar
from typing import Any, Literal

import redis.asyncio

from bot.core.log import get_logger

log = get_logger(__name__)

BreakerState = Literal["closed", "open", "half_open"]

#: The breaker (its hash key) whose allow() found the circuit clean, for the call the current task makes.
_clean_at_allow: ContextVar[str | None] = ContextVar("breaker_clean_at_allow", default=None)

KEY_PREFIX = "deskmate:breaker:"

# KEYS: hash, open, trial.  ARGV: threshold, cooldown_ms.  Returns the state after the failure.
_RECORD_FAILURE = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 'open'
end
if redis.call('HGET', KEYS[1], 'tripped') == '1' then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[1], 'failures', 0)
  return 'open'
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if failures >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
  redis.call('HSET', KEYS[1], 'tripped', 1, 'failures', 0)
  redis.call('DEL', KEYS[3])
  return 'open'
end
return 'closed'
"""

# KEYS: hash, open, trial.  A success while open (a call that started before it opened) changes nothing.
_RECORD_SUCCESS = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 'open'
end
redis.call('DEL', KEYS[1], KEYS[3])
return 'closed'
"""

# KEYS: hash, open, trial.  ARGV: trial_ttl_ms.  Returns 1 when the call may go ahead, 2 when it may and the circuit
# is clean (closed, no failure counted: a success would change nothing), 0 when it may not.
_ALLOW = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 2
end
if redis.call('HGET', KEYS[1], 'tripped') ~= '1' then
  return 1
end
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[1]) then
  return 1
end
return 0
"""


class CircuitBreaker:
    """Shared circuit breaker for one dependency (``name``), e.g. ``"anthropic"``."""

    def __init__(
        self,
        redis_client: redis.asyncio.Redis,
        name: str,
        *,
        threshold: int = 5,
        cooldown_s: float = 30.0,
        trial_timeout_s: float = 120.0,
        redis_timeout_s: float = 1.0,
    ) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self.redis = redis_client
        self.name = name
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        #: How long a half-open trial may take before another process may try (frees a dead caller's lease).
        self.trial_timeout_s = trial_timeout_s
        #: A Redis call slower than this counts as a Redis failure: the breaker must not add latency.
        self.redis_timeout_s = redis_timeout_s
        base = f"{KEY_PREFIX}{name}"
        self.keys = [base, f"{base}:open", f"{base}:trial"]
        self._allow = redis_client.register_script(_ALLOW)
        self._failure = redis_client.register_script(_RECORD_FAILURE)
        self._success = redis_client.register_script(_RECORD_SUCCESS)
        self._last_error_log = 0.0

    async def allow(self) -> bool:
        """May a call go ahead now? In half-open, only the one caller that wins the trial lease gets True."""
        result = await self._run("allow", self._allow(keys=self.keys, args=[_ms(self.trial_timeout_s)]))
        allowed = 1 if result is None else int(result)
        _clean_at_allow.set(self.keys[0] if allowed == 2 else None)
        return allowed > 0

    async def record_success(self) -> None:
        if _clean_at_allow.get() == self.keys[0]:  # this task's call started with the circuit clean
            _clean_at_allow.set(None)
            return
        state = await self._run("record_success", self._success(keys=self.keys))
        if state is not None and _text(state) == "closed":
            log.debug("breaker_success", breaker=self.name)

    async def record_failure(self) -> None:
        _clean_at_allow.set(None)
        state = await self._run(
            "record_failure", self._failure(keys=self.keys, args=[self.threshold, _ms(self.cooldown_s)])
        )
        if state is not None and _text(state) == "open":
            log.warning("breaker_open", breaker=self.name, cooldown_s=self.cooldown_s)

    async def record(self, *, success: bool) -> None:
        """A call's outcome: :meth:`record_success` or :meth:`record_failure`."""
        if success:
            await self.record_success()
        else:
            await self.record_failure()

    async def state(self) -> BreakerState:
        """``closed``, ``open`` or ``half_open``; ``closed`` when Redis is unreadable (it fails open)."""

        async def read() -> BreakerState:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.exists(self.keys[1])
                pipe.hget(self.keys[0], "tripped")
                is_open, tripped = await pipe.execute()
            if is_open:
                return "open"
            return "half_open" if _text(tripped) == "1" else "closed"

        result = await self._run("state", read())
        return result if result is not None else "closed"

    async def reset(self) -> None:
        """Close the circuit and forget failures (an operator's manual override)."""
        await self._run("reset", self.redis.delete(*self.keys))

    async def _run(self, op: str, awaitable: Any) -> Any:
        """Await a Redis operation; on any Redis error or timeout log (at most every 10 s) and return None."""
        try:
            async with asyncio.timeout(self.redis_timeout_s):  # no task of its own, unlike wait_for
                return await awaitable
        except (redis.RedisError, OSError, TimeoutError) as exc:
            now = time.monotonic()
            if now - self._last_error_log >= 10.0:
                self._last_error_log = now
                log.warning("breaker_redis_error", breaker=self.name, op=op, error=repr(exc))
            return None


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
