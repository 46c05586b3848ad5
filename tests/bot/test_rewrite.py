"""The search query of a conversation, through the pipeline: the rewrite model (the real anthropic SDK against the
local Messages API fake) and its fallback to the offline query of knowledge/query.py.

Each test runs a short thread through :class:`AnswerPipeline` with the real retriever over the shared sample index,
the real :class:`AnswerEngine` and :class:`QueryRewriter` sharing one client and one Redis circuit breaker, and a
real SQLite database; tracing and delivery are the in-memory parts of tests/bot/test_pipeline.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from bot.answering import AnswerEngine
from bot.core.pricing import cost_usd
from bot.core.settings import DEFAULT_PRICES, Settings
from bot.core.types import Platform, Question
from bot.pipeline import AnswerPipeline
from bot.rewrite import REWRITE_MAX_TOKENS, QueryRewriter, build_rewrite_request, query_from_message
from bot.llm import Turn
from feedback.db import Database
from feedback.interactions import InteractionStore
from feedback.models import Interaction
from knowledge.retrieval import Retriever
from playbooks.killswitch import GLOBAL_SCOPE, Mode, set_mode
from playbooks.releases import activate, create_release
from tests.bot.test_pipeline import FakeDeliverer, FakeTracing
from tests.conftest import settings_for
from tests.fakes.anthropic_server import FakeAnthropic, Reply

FIRST = "vpn not working"
FOLLOW_UP = "and if that doesn't help?"
OFFLINE = "and if that doesn't help? vpn working "  # then the first answer's most specific words
REWRITTEN = "NorthGate VPN still not working after troubleshooting"
REWRITE_MODEL = "claude-haiku-4-5-20251001"
REWRITE_USAGE = {"input_tokens": 180, "output_tokens": 11, "cache_read_input_tokens": 0,
                 "cache_creation_input_tokens": 0}


@dataclass
class Thread:
    pipeline: AnswerPipeline
    store: InteractionStore
    engine: AnswerEngine
    tracing: FakeTracing
    db: Database
    settings: Settings
    thread: str

    async def ask(self, text: str) -> Interaction:
        question = Question(idempotency_key=f"test:{uuid.uuid4().hex}", platform=Platform.SLACK, workspace="T1",
                            channel="D1", thread=self.thread, user="U1", text=text, channel_type="im",
                            reply_target={"channel": "D1", "thread_ts": self.thread})
        interaction_id, _ = await self.store.record_pending(question)
        await self.pipeline.run(interaction_id)
        row = await self.store.get(interaction_id)
        assert row is not None
        return row

    async def use_release(self, **changes: Any) -> None:
        async with self.db.asession() as session:
            await create_release(session, self.settings, "r-test", actor="test", **changes)
            await activate(session, self.settings, "r-test", actor="test", action="promote")


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
    yield client
    await client.aclose()


@pytest.fixture
async def make_thread(sample_data_dir: Path, sample_retriever: Retriever, database: Database,
                      redis_client: redis.asyncio.Redis) -> AsyncIterator[Any]:
    engines: list[AnswerEngine] = []

    async def make(fake: FakeAnthropic | None, **overrides: Any) -> Thread:
        values: dict[str, Any] = {"anthropic_api_key": "test-key", "anthropic_base_url": fake.url} if fake else {}
        values |= {"llm_max_retries": 0, "llm_timeout_s": 5.0, "history_turns": 6}
        settings = settings_for(sample_data_dir, **(values | overrides))
        engine = AnswerEngine(settings, redis_client)
        engines.append(engine)
        rewriter = QueryRewriter(settings, engine.client, engine.breaker)
        store = InteractionStore(database, user_salt="test-salt")
        tracing = FakeTracing()
        pipeline = AnswerPipeline(settings, database, store, sample_retriever, engine, tracing,
                                  {Platform.SLACK: FakeDeliverer()}, rewriter=rewriter)
        return Thread(pipeline, store, engine, tracing, database, settings, f"t-{uuid.uuid4().hex[:8]}")

    yield make
    for engine in engines:
        await engine.close()


def text_of(request: Any) -> str:
    return " ".join(str(m["content"]) for m in request.body["messages"])


# --- with the model -------------------------------------------------------------------------------------------
async def test_the_rewrite_model_makes_the_query_and_its_cost_is_counted(fake_anthropic: FakeAnthropic,
                                                                         make_thread: Any) -> None:
    thread = await make_thread(fake_anthropic)
    await thread.use_release(rewrite_model=REWRITE_MODEL)
    first = await thread.ask(FIRST)
    assert len(fake_anthropic.message_requests) == 1, "no history, English: auto mode asks no rewrite"
    assert first.search_query == FIRST and "rewrite" not in first.latency_ms

    fake_anthropic.script(Reply.plain(REWRITTEN, usage=REWRITE_USAGE))
    row = await thread.ask(FOLLOW_UP)

    rewrite, answer = fake_anthropic.message_requests[1:]
    assert rewrite.body["model"] == REWRITE_MODEL, "the release's rewrite model"
    assert rewrite.body["max_tokens"] == REWRITE_MAX_TOKENS <= 100 and not rewrite.stream
    assert FIRST in text_of(rewrite) and FOLLOW_UP in text_of(rewrite), "the history and the message"
    assert "English" in rewrite.body["system"]
    assert answer.body["model"] == thread.settings.anthropic_model and FOLLOW_UP in text_of(answer), \
        "the answer is to the message as written, with its history"

    assert row.search_query == REWRITTEN
    assert row.passages[0]["doc_id"] == "it/vpn"
    answer_usage = thread.tracing.spans[-1].generations[0]["usage"]
    assert row.input_tokens == 180 + answer_usage.input_tokens
    assert row.output_tokens == 11 + answer_usage.output_tokens
    rewrite_cost = 180 * 1.0 / 1e6 + 11 * 5.0 / 1e6  # claude-haiku-4-5 list prices
    assert rewrite_cost == pytest.approx(cost_usd(REWRITE_MODEL, _usage(REWRITE_USAGE), DEFAULT_PRICES))
    answer_cost = cost_usd(thread.settings.anthropic_model, answer_usage, DEFAULT_PRICES)
    assert row.cost_usd == pytest.approx(rewrite_cost + answer_cost)
    assert 0 < row.latency_ms["rewrite"] < 5000

    span = thread.tracing.spans[-1]
    assert [(r["model"], r["output_text"], r["error"]) for r in span.rewrites] == [(REWRITE_MODEL, REWRITTEN, None)]
    assert span.rewrites[0]["cost_usd"] == pytest.approx(rewrite_cost)
    assert span.retrievals[0][1] == REWRITTEN and span.query_methods == ["llm"]


async def test_a_failing_rewrite_falls_back_to_the_offline_query(fake_anthropic: FakeAnthropic,
                                                                make_thread: Any) -> None:
    thread = await make_thread(fake_anthropic)
    await thread.ask(FIRST)
    fake_anthropic.script(Reply.server_error(retry_after_s=0.01), Reply.server_error(retry_after_s=0.01))
    row = await thread.ask(FOLLOW_UP)

    requests = fake_anthropic.message_requests[1:]
    assert len(requests) == 3, "the rewrite tried twice (one retry, no more), then the answer"
    assert requests[0].body["model"] == requests[1].body["model"] == "claude-haiku-4-5"
    assert row.search_query.startswith(OFFLINE) and row.passages[0]["doc_id"] == "it/vpn"
    assert row.status == "answered" and not row.fallback, "the answer itself still came from the model"
    assert row.latency_ms["rewrite"] > 0
    span = thread.tracing.spans[-1]
    assert span.rewrites[0]["error"] == "server error (500)" and span.query_methods == ["offline"]
    assert row.input_tokens == span.generations[0]["usage"].input_tokens, "a failed rewrite costs nothing"


async def test_a_slow_rewrite_times_out_quickly(fake_anthropic: FakeAnthropic, make_thread: Any) -> None:
    thread = await make_thread(fake_anthropic, query_rewrite_timeout_s=0.3, query_rewrite_max_retries=0)
    await thread.ask(FIRST)
    fake_anthropic.script(Reply.slow(3.0))
    row = await thread.ask(FOLLOW_UP)
    assert row.search_query.startswith(OFFLINE)
    assert 250 <= row.latency_ms["rewrite"] < 2000
    assert thread.tracing.spans[-1].rewrites[0]["error"] == "timeout"


async def test_an_open_circuit_skips_the_rewrite(fake_anthropic: FakeAnthropic, make_thread: Any) -> None:
    thread = await make_thread(fake_anthropic, breaker_failure_threshold=1)
    await thread.ask(FIRST)
    assert thread.engine.breaker is not None
    await thread.engine.breaker.record_failure()  # the answer path saw the API fail: the circuit opens
    row = await thread.ask(FOLLOW_UP)
    assert len(fake_anthropic.message_requests) == 1, "neither rewrite nor answer called the API"
    assert row.search_query.startswith(OFFLINE) and row.passages[0]["doc_id"] == "it/vpn" and row.fallback
    assert "rewrite" not in row.latency_ms and thread.tracing.spans[-1].rewrites == []


async def test_a_failing_rewrite_counts_against_the_answers_breaker(fake_anthropic: FakeAnthropic,
                                                                   make_thread: Any) -> None:
    thread = await make_thread(fake_anthropic, breaker_failure_threshold=1, query_rewrite_max_retries=0)
    await thread.ask(FIRST)
    fake_anthropic.script(Reply.overloaded())
    row = await thread.ask(FOLLOW_UP)
    assert len(fake_anthropic.message_requests) == 2, "the rewrite failed and opened the circuit: no answer call"
    assert row.fallback and row.fallback_reason == "the AI model is unavailable (circuit open)"
    assert thread.engine.breaker is not None and await thread.engine.breaker.state() == "open"


async def test_retrieval_only_mode_uses_the_offline_query(fake_anthropic: FakeAnthropic, make_thread: Any) -> None:
    thread = await make_thread(fake_anthropic)
    await thread.ask(FIRST)
    async with thread.db.asession() as session:
        await set_mode(session, GLOBAL_SCOPE, Mode.RETRIEVAL_ONLY, actor="test")
    row = await thread.ask(FOLLOW_UP)
    assert len(fake_anthropic.message_requests) == 1 and row.search_query.startswith(OFFLINE)


async def test_a_message_in_another_language_is_rewritten_into_the_documents_language(
        fake_anthropic: FakeAnthropic, make_thread: Any) -> None:
    thread = await make_thread(fake_anthropic)
    fake_anthropic.script(Reply.plain("How do I connect to the VPN?", usage=REWRITE_USAGE))
    row = await thread.ask("¿Cómo me conecto a la VPN?")
    rewrite = fake_anthropic.message_requests[0]
    assert "English" in rewrite.body["system"] and "(no earlier messages)" in text_of(rewrite)
    assert row.search_query == "How do I connect to the VPN?" and row.passages[0]["doc_id"] == "it/vpn"


@pytest.mark.parametrize("mode, requests, expected_query", [
    ("llm", 2, REWRITTEN),  # the rewrite and the answer: every message is rewritten, even the first
    ("offline", 1, FIRST),
    ("off", 1, FIRST),
])
async def test_the_release_decides_how_the_query_is_made(fake_anthropic: FakeAnthropic, make_thread: Any,
                                                        mode: str, requests: int, expected_query: str) -> None:
    thread = await make_thread(fake_anthropic)
    await thread.use_release(query_rewrite=mode)
    fake_anthropic.script(Reply.plain(REWRITTEN))
    row = await thread.ask(FIRST)
    assert len(fake_anthropic.message_requests) == requests
    assert row.search_query == expected_query
    if mode == "llm":
        fake_anthropic.script(Reply.plain(REWRITTEN))
    follow_up = await thread.ask(FOLLOW_UP)
    assert follow_up.search_query is not None
    assert follow_up.search_query.startswith({"llm": REWRITTEN, "offline": OFFLINE, "off": FOLLOW_UP}[mode])
    assert mode == "offline" or follow_up.search_query in (REWRITTEN, FOLLOW_UP)


# --- without the model ----------------------------------------------------------------------------------------
async def test_without_a_key_the_offline_query_finds_the_vpn_page(make_thread: Any) -> None:
    thread = await make_thread(None)
    await thread.ask(FIRST)
    row = await thread.ask(FOLLOW_UP)
    assert row.search_query.startswith(OFFLINE)
    assert row.passages[0]["doc_id"] == "it/vpn" and row.status == "answered"
    assert thread.tracing.spans[-1].query_methods == ["offline"] and "rewrite" not in row.latency_ms


# --- the request and the reply --------------------------------------------------------------------------------
def test_the_request_cuts_long_answers_and_their_markers() -> None:
    history = [Turn(role="user", text="vpn not working"), Turn(role="assistant", text="Switch to TCP [1]. " * 100)]
    request = build_rewrite_request("and then?", history, model="m", language="de")
    content = request["messages"][0]["content"]
    assert "[1]" not in content and "…" in content and len(content) < 1200
    assert "German" in request["system"]


@pytest.mark.parametrize("reply, query", [
    ('"VPN handshake failed on hotel Wi-Fi"', "VPN handshake failed on hotel Wi-Fi"),
    ("Query: per diem Canada\n\nThis asks about...", "per diem Canada"),
])
def test_the_query_is_the_first_line_without_quotes_or_label(reply: str, query: str) -> None:
    assert query_from_message(_message(reply)) == query


def _message(text: str) -> Any:
    import anthropic

    return anthropic.types.Message.model_validate({
        "id": "m", "type": "message", "role": "assistant", "model": "claude-haiku-4-5", "stop_reason": "end_turn",
        "content": [{"type": "text", "text": text}], "usage": {"input_tokens": 1, "output_tokens": 1}})


def _usage(usage: dict[str, int]) -> Any:
    from bot.core.types import Usage

    return Usage(input_tokens=usage["input_tokens"], output_tokens=usage["output_tokens"])
