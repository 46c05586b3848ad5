"""AnswerEngine end to end: real anthropic SDK → local fake Messages API, real Redis for the breaker."""

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio

from bot.answering import AnswerEngine
from bot.status_text import NOT_FOUND_TEXT
from bot.core.pricing import cost_usd
from bot.core.settings import DEFAULT_PRICES, Settings
from bot.core.types import Status
from bot.llm import GenerationConfig, Turn
from tests.bot.passages import passage
from tests.fakes.anthropic_server import FakeAnthropic, Reply, start_fake_anthropic
from tests.fakes.redis_server import RedisServer, start_redis_server

CONFIG = GenerationConfig(model="claude-haiku-4-5", max_tokens=512, timeout_s=2.0)
LABEL = "_Automatic excerpt — not written by the AI model"


PASSAGES = [
    passage(
        0,
        "Expenses policy",
        "Travel",
        "Book flights and hotels through Navan so that the company's negotiated rates apply. Economy class is the "
        "default for flights under six hours. Submit receipts in Navan within 30 days of the trip.",
        0.78,
    ),
    passage(
        1,
        "Expenses policy",
        "Meals",
        "Meals on business trips are reimbursed up to 60 EUR per day. Alcohol is not reimbursed.",
        0.55,
    ),
    passage(
        2,
        "Leave policy",
        "Annual leave",
        "Full-time employees receive 25 days of paid annual leave per calendar year, plus public holidays.",
        0.35,
    ),
    passage(
        3,
        "IT handbook",
        "Laptops",
        "Laptops are replaced every three years. Request a replacement through the IT service desk.",
        0.12,
    ),
]
QUESTION = "How do I book a flight for a business trip and when are receipts due?"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with start_redis_server() as server:
        yield server


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_server.url, socket_timeout=1, socket_connect_timeout=1)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with start_fake_anthropic() as server:
        yield server


def make_settings(fake: FakeAnthropic | None, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "anthropic_api_key": "test-key" if fake else None,
        "anthropic_base_url": fake.url if fake else None,
        "llm_max_retries": 1,
        "llm_timeout_s": 2.0,
        "breaker_failure_threshold": 2,
        "breaker_cooldown_s": 0.4,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def engine(fake: FakeAnthropic, redis_client: redis.asyncio.Redis) -> AsyncIterator[AnswerEngine]:
    e = AnswerEngine(make_settings(fake), redis_client)
    yield e
    await e.close()


async def compose(engine: AnswerEngine, question: str = QUESTION, **kw: object):
    return await engine.compose(question, [], PASSAGES, CONFIG, **kw)  # type: ignore[arg-type]


# --- answered ---------------------------------------------------------------------------------------------


async def test_answer_with_citations_usage_and_cost(fake: FakeAnthropic, engine: AnswerEngine) -> None:
    fake.script(
        Reply.answer(
            cite=[0, 1],
            model="claude-haiku-4-5-20251001",
            usage={
                "input_tokens": 1200,
                "output_tokens": 150,
                "cache_read_input_tokens": 400,
                "cache_creation_input_tokens": 0,
            },
        )
    )
    answer = await compose(engine)
    assert answer.status is Status.ANSWERED
    assert not answer.fallback and answer.fallback_reason is None and answer.error is None
    assert (
        "Book flights and hotels through Navan" in answer.text
        and "[1]" in answer.text
        and "[2]" in answer.text
    )
    assert [(s.number, s.heading) for s in answer.sources] == [(1, "Travel"), (2, "Meals")]
    assert answer.model == "claude-haiku-4-5-20251001"
    assert (answer.usage.input_tokens, answer.usage.output_tokens, answer.usage.cache_read_tokens) == (
        1200,
        150,
        400,
    )
    # haiku 4.5: $1 in, $5 out, $0.10 cache read per million tokens
    assert answer.cost_usd == pytest.approx((1200 * 1.0 + 150 * 5.0 + 400 * 0.10) / 1e6)
    assert answer.cost_usd == cost_usd(answer.model, answer.usage, DEFAULT_PRICES)
    assert answer.llm_latency_ms is not None and answer.llm_latency_ms > 0
    assert await engine.breaker.state() == "closed"  # type: ignore[union-attr]


async def test_streaming_engine_gives_the_same_answer(
    fake: FakeAnthropic, redis_client: redis.asyncio.Redis
) -> None:
    usage = {
        "input_tokens": 1000,
        "output_tokens": 90,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }
    fake.script(Reply.answer(cite=[1, 0], usage=usage), Reply.answer(cite=[1, 0], usage=usage))
    plain = AnswerEngine(make_settings(fake), redis_client)
    streaming = AnswerEngine(make_settings(fake), redis_client, stream=True)
    a, b = await compose(plain), await compose(streaming)
    assert [r.stream for r in fake.requests] == [False, True]
    assert (a.text, a.sources, a.usage, a.cost_usd) == (b.text, b.sources, b.usage, b.cost_usd)
    await plain.close()
    await streaming.close()


async def test_history_reaches_the_model(fake: FakeAnthropic, engine: AnswerEngine) -> None:
    history = [
        Turn(role="user", text="Can I fly business class?"),
        Turn(role="assistant", text="Only over six hours [1]."),
    ]
    await engine.compose("And who books it?", history, PASSAGES, CONFIG)
    roles = [m["role"] for m in fake.requests[0].body["messages"]]
    assert roles == ["user", "assistant", "user"]


# --- model calls at once (llm_max_concurrent) -------------------------------------------------------------


async def test_at_most_llm_max_concurrent_answers_are_with_the_model(
    fake: FakeAnthropic, redis_client: redis.asyncio.Redis
) -> None:
    """Six answers ready at once, two calls at a time: each further call starts only once an earlier one ended,
    and every answer is still the model's (with how long it waited for its turn)."""
    call_s = 0.3
    fake.always(Reply.answer(delay_s=call_s))
    engine = AnswerEngine(make_settings(fake, llm_max_concurrent=2), redis_client)
    try:
        answers = await asyncio.gather(*(compose(engine) for _ in range(6)))
    finally:
        await engine.close()
    assert all(a.status is Status.ANSWERED and not a.fallback for a in answers)
    arrivals = sorted(r.at for r in fake.message_requests)
    assert len(arrivals) == 6
    for k in range(2, 6):  # call k could start only after call k-2 had its answer
        assert arrivals[k] >= arrivals[k - 2] + call_s * 0.9, arrivals
    waits = sorted(a.llm_slot_wait_ms or 0.0 for a in answers)
    assert waits[:2] == [pytest.approx(0.0, abs=50)] * 2 and all(w >= call_s * 900 for w in waits[2:]), waits


async def test_without_a_bound_every_ready_answer_calls_the_model_at_once(
    fake: FakeAnthropic, engine: AnswerEngine
) -> None:
    fake.always(Reply.answer(delay_s=1.0))
    answers = await asyncio.gather(*(compose(engine) for _ in range(6)))
    assert all(a.status is Status.ANSWERED and not a.llm_slot_wait_ms for a in answers)
    arrivals = sorted(r.at for r in fake.message_requests)
    assert arrivals[-1] < arrivals[0] + 1.0, "the sixth call waited for the first to end"


# --- not found --------------------------------------------------------------------------------------------


async def test_no_passages_is_not_found(fake: FakeAnthropic, engine: AnswerEngine) -> None:
    answer = await engine.compose("What is the dress code?", [], [], CONFIG)
    assert answer.status is Status.NOT_FOUND
    assert answer.sources == [] and "closest sources" not in answer.text
    assert fake.requests == []


async def test_model_says_not_found(fake: FakeAnthropic, engine: AnswerEngine) -> None:
    fake.script(Reply.not_found("NOT_FOUND The documents cover travel and meals, not parking."))
    answer = await compose(engine, "Is parking at the airport reimbursed?")
    assert answer.status is Status.NOT_FOUND
    assert answer.text.startswith(NOT_FOUND_TEXT)
    assert "The documents cover travel and meals, not parking." in answer.text
    assert "NOT_FOUND" not in answer.text
    assert [s.number for s in answer.sources] == [1, 2, 3]
    assert not answer.fallback
    assert answer.usage.output_tokens > 0 and answer.cost_usd > 0  # the call still cost money
    assert await engine.breaker.state() == "closed"  # type: ignore[union-attr]


# --- fallbacks without a call -----------------------------------------------------------------------------


async def test_no_api_key_falls_back_with_a_label(redis_client: redis.asyncio.Redis) -> None:
    engine = AnswerEngine(make_settings(None), redis_client)
    assert engine.client is None
    answer = await compose(engine)
    assert answer.fallback and answer.fallback_reason == "no API key configured"
    assert answer.text.startswith(f"{LABEL} (no API key configured)._")
    assert answer.status is Status.ANSWERED
    assert "Submit receipts in Navan within 30 days of the trip." in answer.text
    assert answer.sources and answer.sources[0].heading == "Travel" and answer.sources[0].quote
    assert answer.sources[-1].heading != "Laptops"  # below min_score: never quoted


async def test_retrieval_only_mode(fake: FakeAnthropic, engine: AnswerEngine) -> None:
    answer = await compose(engine, allow_llm=False)
    assert answer.fallback and answer.fallback_reason == "retrieval-only mode"
    assert answer.text.startswith(f"{LABEL} (retrieval-only mode)._")
    assert fake.requests == []


async def test_engine_without_redis_has_no_breaker(fake: FakeAnthropic) -> None:
    engine = AnswerEngine(make_settings(fake), None)
    fake.always(Reply.overloaded(retry_after_s=0.01))
    for _ in range(3):
        assert (await compose(engine)).fallback
    fake.always(Reply.answer())
    assert not (await compose(engine)).fallback
    await engine.close()


# --- LLM failures -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply.overloaded(retry_after_s=0.01), "the AI model is unavailable: overloaded (529)"),
        (Reply.server_error(500, retry_after_s=0.01), "the AI model is unavailable: server error (500)"),
        (Reply.rate_limited(0.01), "the AI model is unavailable: rate limited (429)"),
        (Reply.malformed(), "the AI model is unavailable: malformed response"),
    ],
    ids=["529", "500", "429", "malformed"],
)
async def test_transient_error_falls_back_and_counts_against_the_breaker(
    fake: FakeAnthropic, engine: AnswerEngine, redis_client: redis.asyncio.Redis, reply: Reply, reason: str
) -> None:
    fake.always(reply)
    answer = await compose(engine)
    assert answer.fallback and answer.fallback_reason == reason
    assert answer.text.startswith(f"{LABEL} ({reason})._")
    assert answer.error and "transient=True" in answer.error
    assert answer.sources and answer.status is Status.ANSWERED
    assert answer.llm_latency_ms is not None
    assert await redis_client.hget("deskmate:breaker:anthropic", "failures") == b"1"


async def test_overloaded_is_retried_before_falling_back(fake: FakeAnthropic, engine: AnswerEngine) -> None:
    fake.always(Reply.overloaded())  # no retry-after: the SDK's own backoff
    answer = await compose(engine)
    assert answer.fallback
    assert len(fake.requests) == 2  # llm_max_retries=1


async def test_timeout_falls_back(fake: FakeAnthropic, redis_client: redis.asyncio.Redis) -> None:
    engine = AnswerEngine(make_settings(fake, llm_max_retries=0), redis_client)
    fake.always(Reply.slow(5.0))
    answer = await engine.compose(
        QUESTION, [], PASSAGES, CONFIG.model_copy(update={"timeout_s": 0.3})
    )
    assert answer.fallback and answer.fallback_reason == "the AI model is unavailable: timeout"
    assert answer.llm_latency_ms is not None and 250 < answer.llm_latency_ms < 2000
    await engine.close()


async def test_permanent_error_falls_back_without_tripping_the_breaker(
    fake: FakeAnthropic, engine: AnswerEngine
) -> None:
    fake.always(Reply.unauthorized())
    for _ in range(3):
        answer = await compose(engine)
        assert answer.fallback
        assert answer.fallback_reason == "the AI model request failed: authentication failed (401)"
    assert len(fake.requests) == 3  # not retried, and the breaker stayed closed
    assert await engine.breaker.state() == "closed"  # type: ignore[union-attr]


# --- the breaker ------------------------------------------------------------------------------------------


async def test_breaker_opens_then_half_opens(fake: FakeAnthropic, redis_client: redis.asyncio.Redis) -> None:
    engine = AnswerEngine(make_settings(fake, llm_max_retries=0), redis_client)
    fake.always(Reply.overloaded())
    for _ in range(2):  # threshold = 2
        assert (await compose(engine)).fallback_reason == "the AI model is unavailable: overloaded (529)"
    assert len(fake.requests) == 2
    assert await engine.breaker.state() == "open"  # type: ignore[union-attr]

    for _ in range(3):
        answer = await compose(engine)
        assert answer.fallback and answer.fallback_reason == "the AI model is unavailable (circuit open)"
        assert answer.text.startswith(f"{LABEL} (the AI model is unavailable (circuit open))._")
        assert answer.llm_latency_ms is None
    assert len(fake.requests) == 2  # nothing reached the API while open

    await asyncio.sleep(0.45)  # cool-down 0.4 s
    assert await engine.breaker.state() == "half_open"  # type: ignore[union-attr]
    fake.always(Reply.answer())
    answer = await compose(engine)
    assert not answer.fallback and answer.status is Status.ANSWERED
    assert len(fake.requests) == 3
    assert await engine.breaker.state() == "closed"  # type: ignore[union-attr]
    await engine.close()


async def test_failed_trial_reopens_for_every_worker(
    fake: FakeAnthropic, redis_client: redis.asyncio.Redis
) -> None:
    settings = make_settings(fake, llm_max_retries=0)
    worker_a, worker_b = AnswerEngine(settings, redis_client), AnswerEngine(settings, redis_client)
    fake.always(Reply.server_error(503))
    await compose(worker_a)
    await compose(worker_b)
    assert (await compose(worker_a)).fallback_reason == "the AI model is unavailable (circuit open)"

    await asyncio.sleep(0.45)
    trial = await compose(worker_b)  # the one trial call: fails again
    assert trial.fallback_reason == "the AI model is unavailable: server error (503)"
    assert (await compose(worker_a)).fallback_reason == "the AI model is unavailable (circuit open)"
    assert len(fake.requests) == 3
    await worker_a.close()
    await worker_b.close()


async def test_answers_while_redis_is_down(fake: FakeAnthropic) -> None:
    with start_redis_server() as server:
        client = redis.asyncio.Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        engine = AnswerEngine(make_settings(fake), client)
        server.stop()
        answer = await compose(engine)
        assert not answer.fallback and answer.status is Status.ANSWERED
        await engine.close()
        await client.aclose()
