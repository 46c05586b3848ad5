"""Per-channel pacing of chat.postMessage, shared through Redis."""

from __future__ import annotations

import redis.asyncio as aioredis

from bot.slack.pacing import ChannelPacer


async def test_burst_then_one_per_interval_per_channel(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        pacer = ChannelPacer(client, interval_s=0.1, burst=3)
        waits = [await pacer.reserve("C1") for _ in range(5)]
        assert waits[:3] == [0.0, 0.0, 0.0]
        assert 0.05 <= waits[3] <= 0.1 and 0.15 <= waits[4] <= 0.2
        assert await pacer.reserve("C2") == 0.0, "channels are paced separately"
    finally:
        await client.aclose()


async def test_without_redis_posts_go_out_unpaced() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.2)
    try:
        assert await ChannelPacer(client).reserve("C1") == 0.0
    finally:
        await client.aclose()
