import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio

from bot.breaker import CircuitBreaker
from tests.fakes.redis_server import RedisServer, start_redis_server


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with start_redis_server() as server:
        yield server


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_server.url, socket_timeout=1, socket_connect_timeout=1)
    yield client
    await client.aclose()


def breaker(client: redis.asyncio.Redis, name: str | None = None, **kw: float) -> CircuitBreaker:
    options = {"threshold": 3, "cooldown_s": 0.3, **kw}
    return CircuitBreaker(client, name or f"test-{uuid.uuid4().hex[:8]}", **options)  # type: ignore[arg-type]


async def test_opens_after_threshold_consecutive_failures(redis_client: redis.asyncio.Redis) -> None:
    b = breaker(redis_client)
    assert await b.state() == "closed"
    for _ in range(2):
        await b.record_failure()
        assert await b.state() == "closed"
        assert await b.allow()
    await b.record_failure()
    assert await b.state() == "open"
    assert not await b.allow()


async def test_success_resets_the_consecutive_count(redis_client: redis.asyncio.Redis) -> None:
    b = breaker(redis_client)
    await b.record_failure()
    await b.record_failure()
    await b.record_success()
    await b.record_failure()
    await b.record_failure()
    assert await b.state() == "closed"


async def test_half_opens_after_cooldown_and_lets_one_trial_through(
    redis_client: redis.asyncio.Redis,
) -> None:
    b = breaker(redis_client)
    for _ in range(3):
        await b.record_failure()
    assert not await b.allow()
    await asyncio.sleep(0.35)
    assert await b.state() == "half_open"
    allowed = await asyncio.gather(*(b.allow() for _ in range(10)))
    assert allowed.count(True) == 1
    await b.record_success()
    assert await b.state() == "closed"
    assert await b.allow() and await b.allow()


async def test_failed_trial_reopens(redis_client: redis.asyncio.Redis) -> None:
    b = breaker(redis_client)
    for _ in range(3):
        await b.record_failure()
    await asyncio.sleep(0.35)
    assert await b.allow()
    await b.record_failure()  # one failure is enough in half-open
    assert await b.state() == "open"
    assert not await b.allow()
    await asyncio.sleep(0.35)
    assert await b.state() == "half_open"
    assert await b.allow()


async def test_a_lost_trial_frees_its_lease(redis_client: redis.asyncio.Redis) -> None:
    b = breaker(redis_client, trial_timeout_s=0.2)
    for _ in range(3):
        await b.record_failure()
    await asyncio.sleep(0.35)
    assert await b.allow()  # this caller never reports back (its process died)
    assert not await b.allow()
    await asyncio.sleep(0.25)
    assert await b.allow()


async def test_state_is_shared_between_processes(redis_server: RedisServer) -> None:
    name = f"shared-{uuid.uuid4().hex[:8]}"
    first = redis.asyncio.Redis.from_url(redis_server.url)
    second = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        worker_a, worker_b = breaker(first, name), breaker(second, name)
        await worker_a.record_failure()
        await worker_b.record_failure()
        await worker_a.record_failure()
        assert await worker_b.state() == "open"
        assert not await worker_b.allow()
        keys = sorted(k.decode() for k in await first.keys(f"deskmate:breaker:{name}*"))
        assert keys == [f"deskmate:breaker:{name}", f"deskmate:breaker:{name}:open"]
    finally:
        await first.aclose()
        await second.aclose()


async def test_success_while_open_does_not_close(redis_client: redis.asyncio.Redis) -> None:
    b = breaker(redis_client)
    for _ in range(3):
        await b.record_failure()
    await b.record_success()  # a call that started before the circuit opened
    assert await b.state() == "open"


async def test_reset_closes(redis_client: redis.asyncio.Redis) -> None:
    b = breaker(redis_client)
    for _ in range(3):
        await b.record_failure()
    await b.reset()
    assert await b.state() == "closed"
    assert await b.allow()


async def test_fails_open_while_redis_is_down_and_recovers() -> None:
    with start_redis_server() as server:
        client = redis.asyncio.Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            b = breaker(client, threshold=1)
            await b.record_failure()
            assert not await b.allow()

            server.stop()
            assert await b.allow()  # no Redis: let calls through rather than refuse everything
            await b.record_failure()
            await b.record_success()
            assert await b.state() == "closed"

            server.start()  # same port; nothing persisted, so the circuit starts closed
            assert await b.allow()
            await b.record_failure()
            assert await b.state() == "open"
        finally:
            await client.aclose()


async def test_slow_redis_counts_as_down(
    redis_server: RedisServer, redis_client: redis.asyncio.Redis
) -> None:
    b = breaker(redis_client, redis_timeout_s=0.05)
    admin = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        await admin.execute_command("CLIENT", "PAUSE", "300")  # every client's commands wait 300 ms
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await b.allow()
        assert loop.time() - started < 0.25
    finally:
        await admin.ping()  # answered only once the pause is over: the next test gets a responsive server
        await admin.aclose()


async def evalsha_calls(client: redis.asyncio.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_a_call_through_a_clean_circuit_costs_one_round_trip(redis_client: redis.asyncio.Redis) -> None:
    """Closed with no failure counted, the call's success would change nothing: it is not written."""
    b = breaker(redis_client)
    before = await evalsha_calls(redis_client)
    for _ in range(5):
        assert await b.allow()
        await b.record(success=True)
    assert await evalsha_calls(redis_client) - before == 5, "one script per call: allow"
    assert await b.state() == "closed"


async def test_a_failure_counted_during_a_clean_call_is_reset_by_the_next_success(
    redis_client: redis.asyncio.Redis,
) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    slow, other = breaker(redis_client, name), breaker(redis_client, name)  # two processes' breakers

    async def slow_call() -> None:  # started while the circuit was clean
        assert await slow.allow()
        allowed.set()
        await started.wait()
        await slow.record(success=True)

    allowed, started = asyncio.Event(), asyncio.Event()
    call = asyncio.create_task(slow_call())
    await allowed.wait()
    for _ in range(2):  # threshold 3: two failures while the slow call runs
        assert await other.allow()
        await other.record(success=False)
    started.set()
    await call
    # the slow call started before those failures; the next success that started after them resets the count
    assert await other.allow()
    await other.record(success=True)
    for _ in range(2):
        assert await other.allow()
        await other.record(success=False)
    assert await other.state() == "closed", "two failures since the last success: under the threshold"
    assert await other.allow()
    await other.record(success=False)
    assert await other.state() == "open"
