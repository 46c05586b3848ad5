"""Per-channel pacing of ``chat.postMessage``: Slack allows about one message per second per channel, with
some burst. The state lives in Redis (GCRA, one key per channel) so that every web and worker process shares
one budget; when Redis is unavailable the post goes out unpaced and Slack's 429 handling takes over.
"""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.core.log import get_logger
from bot.core.settings import Settings

log = get_logger(__name__)

# KEYS[1] = the channel's key; ARGV = now_ms, interval_ms, burst_ms. Reserves the next slot, returns the wait.
_RESERVE = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - burst - now
if wait < 0 then wait = 0 end
local new_tat = tat + interval
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.max(1, new_tat - now + interval))
return wait
"""


class ChannelPacer:
    def __init__(self, redis: Redis, *, interval_s: float = 1.0, burst: int = 3, prefix: str = "deskmate:slack:pace") -> None:
        self.redis = redis
        self.interval_ms = max(0, int(interval_s * 1000))
        self.burst_ms = max(0, burst - 1) * self.interval_ms
        self.prefix = prefix

    async def reserve(self, channel: str) -> float:
        """Seconds to wait before posting to ``channel`` (the slot is reserved)."""
        if self.interval_ms <= 0 or not channel:
            return 0.0
        try:
            wait_ms = await self.redis.eval(  # type: ignore[misc]  # redis' stubs: Awaitable[str] | str
                _RESERVE, 1, f"{self.prefix}:{channel}", str(int(time.time() * 1000)), str(self.interval_ms),
                str(self.burst_ms))
        except (RedisError, OSError) as exc:
            log.warning("slack.pacing_unavailable", error=str(exc))
            return 0.0
        return float(wait_ms) / 1000

    async def wait(self, channel: str) -> None:
        delay = await self.reserve(channel)
        if delay > 0:
            log.info("slack.paced", channel=channel, wait_s=round(delay, 3))
            await asyncio.sleep(delay)


def pacer_for(redis: Redis, settings: Settings) -> ChannelPacer:
    return ChannelPacer(redis, interval_s=settings.slack_post_interval_s, burst=settings.slack_post_burst)
