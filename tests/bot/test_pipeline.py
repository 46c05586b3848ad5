"""AnswerPipeline against its seams: in-memory searcher, composer, tracing and deliverer; a real SQLite database.

No servers, no model, no index: each test drives one interaction through :meth:`AnswerPipeline.run` (or
:meth:`~AnswerPipeline.fail`) and checks what a user sees (what was delivered) and what an operator sees (the
recorded interaction).
"""

from __future__ import annotations

import asyncio

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.core.clock import utcnow
from bot.core.settings import Settings
from bot.core.types import Answer, Platform, Question, Source, Status, Usage
from bot.delivery import DeliveryFailed
from bot.llm import GenerationConfig, Turn
from bot.pipeline import FAILURE_NOTICE, AnswerPipeline, retry_delay
from feedback.db import Database
from feedback.interactions import DeliveryState, InteractionStore
from feedback.models import Interaction
from knowledge.index import IndexNotFound
from knowledge.passage import Passage
from playbooks.channel_policy import set_policy
from playbooks.killswitch import GLOBAL_SCOPE, Mode, channel_scope, set_mode
from tests.conftest import settings_for


# --- in-memory parts -------------------------------------------------------------------------------------
def passage(doc_id: str = "travel/per-diem", *, dense: float = 0.8, text: str = "USD 80 a day.") -> Passage:
    return Passage(chunk_id=f"{doc_id}#0", doc_id=doc_id, kb="default", knowledge_set=doc_id.split("/")[0],
                   title=doc_id.split("/")[-1].title(), location=f"{doc_id}.md", heading="Rates", text=text,
                   score=0.9, index_version=3, dense_score=dense, bm25_score=4.0)


@dataclass
class FakeSearcher:
    passages: list[Passage] = field(default_factory=lambda: [passage()])
    error: Exception | None = None
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def asearch(self, query: str, **kwargs: Any) -> list[Passage]:
        self.calls.append((query, kwargs))
        if self.error is not None:
            raise self.error
        return list(self.passages)

    async def avocabulary(self, kb: str, version: int | None = None) -> dict[str, int]:
        return {"per": 3, "diem": 2, "us": 9, "canada": 2, "vpn": 4, "travel": 12}


@dataclass
class ComposeCall:
    question: str
    history: list[Turn]
    passages: list[Passage]
    config: GenerationConfig
    allow_llm: bool


@dataclass
class FakeComposer:
    calls: list[ComposeCall] = field(default_factory=list)

    async def compose(self, question: str, history: list[Turn], passages: list[Passage], config: GenerationConfig,
                      *, allow_llm: bool = True) -> Answer:
        self.calls.append(ComposeCall(question, list(history), list(passages), config, allow_llm))
        first = passages[0]
        return Answer(text=f"Answer to {question!r} [1].", model=config.model,
                      sources=[Source(number=1, doc_id=first.doc_id, title=first.title, location=first.location)],
                      usage=Usage(input_tokens=120, output_tokens=30), cost_usd=0.0012, llm_latency_ms=5.0)


@dataclass
class FakeSpan:
    trace_id: str | None
    retrievals: list[tuple[int, str]] = field(default_factory=list)
    generations: list[dict[str, Any]] = field(default_factory=list)
    rewrites: list[dict[str, Any]] = field(default_factory=list)
    finished: list[tuple[str, str]] = field(default_factory=list)
    query_methods: list[str | None] = field(default_factory=list)

    def retrieval(self, passages: Sequence[Passage], latency_ms: float, query: str, *,
                  query_method: str | None = None, query_reason: str | None = None) -> None:
        self.retrievals.append((len(passages), query))
        self.query_methods.append(query_method)

    def rewrite(self, **kwargs: Any) -> None:
        self.rewrites.append(kwargs)

    def generation(self, **kwargs: Any) -> None:
        self.generations.append(kwargs)

    def finish(self, answer_text: str, status: str) -> None:
        self.finished.append((answer_text, status))


@dataclass
class FakeTracing:
    trace_id: str | None = "trace-0001"
    spans: list[FakeSpan] = field(default_factory=list)
    opened: list[dict[str, Any]] = field(default_factory=list)

    @contextmanager
    def answer_trace(self, **kwargs: Any) -> Iterator[FakeSpan]:
        self.opened.append(kwargs)
        span = FakeSpan(self.trace_id)
        self.spans.append(span)
        yield span


@dataclass
class FakeDeliverer:
    """Records every attempt; ``errors`` are raised by the next attempts, one each (then it succeeds)."""

    errors: list[Exception] = field(default_factory=list)
    attempts: list[tuple[Question, Answer]] = field(default_factory=list)
    delivered: list[tuple[Question, Answer]] = field(default_factory=list)
    failures: list[tuple[Question, str]] = field(default_factory=list)

    async def deliver(self, question: Question, answer: Answer) -> dict[str, Any]:
        self.attempts.append((question, answer))
        if self.errors:
            raise self.errors.pop(0)
        self.delivered.append((question, answer))
        return {"ok": True, "ts": "1700000000.000100"}

    async def deliver_failure(self, question: Question, message: str) -> dict[str, Any]:
        if self.errors:
            raise self.errors.pop(0)
        self.failures.append((question, message))
        return {"ok": True, "ts": "1700000000.000200"}

    async def aclose(self) -> None:
        return None


@dataclass
class FakeScheduler:
    """The delivery queue: records hand-overs ``(interaction_id, idempotency_key, defer_s)``."""

    scheduled: list[tuple[int, str, float]] = field(default_factory=list)

    async def schedule(self, interaction_id: int, idempotency_key: str, defer_s: float) -> bool:
        self.scheduled.append((interaction_id, idempotency_key, defer_s))
        return True


@dataclass
class Parts:
    pipeline: AnswerPipeline
    store: InteractionStore
    searcher: FakeSearcher
    composer: FakeComposer
    tracing: FakeTracing
    deliverer: FakeDeliverer
    db: Database
    scheduler: FakeScheduler

    async def ask(self, text: str = "What is the per diem in the US?", *, channel: str = "D1", thread: str = "t1",
                  channel_type: str = "im") -> int:
        question = Question(idempotency_key=f"test:{uuid.uuid4().hex}", platform=Platform.SLACK, workspace="T1",
                            channel=channel, thread=thread, user="U1", text=text, channel_type=channel_type,
                            reply_target={"channel": channel, "thread_ts": thread})
        interaction_id, duplicate = await self.store.record_pending(question)
        assert not duplicate
        return interaction_id

    async def row(self, interaction_id: int) -> Interaction:
        row = await self.store.get(interaction_id)
        assert row is not None
        return row


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(tmp_path, retrieval_min_score=0.3, history_turns=6, delivery_backoff_s=2.0,
                        delivery_backoff_max_s=60.0, delivery_retry_after_max_s=300.0, delivery_deadline_s=900.0)


@pytest.fixture
def parts(settings: Settings, database: Database) -> Parts:
    store = InteractionStore(database, user_salt="test-salt")
    searcher, composer, tracing, deliverer = FakeSearcher(), FakeComposer(), FakeTracing(), FakeDeliverer()
    scheduler = FakeScheduler()
    pipeline = AnswerPipeline(settings, database, store, searcher, composer, tracing, {Platform.SLACK: deliverer},
                              deliveries=scheduler)
    return Parts(pipeline, store, searcher, composer, tracing, deliverer, database, scheduler)


# --- the answered path --------------------------------------------------------------------------------------
async def test_answer_is_recorded_traced_and_delivered(parts: Parts) -> None:
    interaction_id = await parts.ask("What is the per diem in the US?")
    answer = await parts.pipeline.run(interaction_id)

    assert answer is not None and answer.status is Status.ANSWERED
    assert [(q.idempotency_key, a.text) for q, a in parts.deliverer.delivered] == [
        ((await parts.row(interaction_id)).idempotency_key, "Answer to 'What is the per diem in the US?' [1].")]
    row = await parts.row(interaction_id)
    assert row.status == "answered" and row.answer == answer.text
    assert [s["doc_id"] for s in row.sources] == ["travel/per-diem"]
    assert [p["doc_id"] for p in row.passages] == ["travel/per-diem"] and row.top_score == pytest.approx(0.8)
    assert row.release == "initial" and row.index_version == 3 and row.model
    assert row.input_tokens == 120 and row.output_tokens == 30 and row.cost_usd == pytest.approx(0.0012)
    assert {"retrieve", "generate", "total_before_delivery", "deliver"} <= set(row.latency_ms)
    assert row.trace_id == "trace-0001"
    assert row.delivery == {"ok": True, "ts": "1700000000.000100"}
    assert (row.delivery_state, row.delivery_attempts, row.delivery_error) == ("delivered", 1, None)
    assert row.delivered_at is not None and parts.scheduler.scheduled == []
    assert row.attempts == 1 and row.answered_at is not None
    # the trace got the retrieval, the model call and the outcome
    [span] = parts.tracing.spans
    assert span.retrievals == [(1, "What is the per diem in the US?")]
    assert [g["usage"].input_tokens for g in span.generations] == [120]
    assert span.finished == [(answer.text, "answered")]
    assert parts.tracing.opened[0]["interaction_id"] == interaction_id


async def test_release_settings_and_channel_policy_reach_retrieval(parts: Parts) -> None:
    """A public channel searches public sources only; k and candidates come from the active release."""
    interaction_id = await parts.ask(channel="C1", channel_type="channel")
    await parts.pipeline.run(interaction_id)
    [(query, kwargs)] = parts.searcher.calls
    assert kwargs["search_filter"].public_only is True
    assert kwargs["kb"] == "default" and kwargs["k"] == 6 and kwargs["candidates"] == 40
    assert parts.composer.calls[0].allow_llm is True

    dm = await parts.ask(channel="D9", channel_type="im")
    await parts.pipeline.run(dm)
    assert parts.searcher.calls[1][1]["search_filter"].public_only is False, "a DM may cite every source"


async def test_weak_passages_give_not_found_without_calling_the_model(parts: Parts) -> None:
    parts.searcher.passages = [passage("it/vpn", dense=0.12), passage("travel/booking", dense=0.05)]
    interaction_id = await parts.ask("Who won the 1998 football world cup?")
    answer = await parts.pipeline.run(interaction_id)

    assert answer is not None and answer.status is Status.NOT_FOUND
    assert parts.composer.calls == [], "nothing relevant: no model call"
    row = await parts.row(interaction_id)
    assert row.status == "not_found" and row.top_score == pytest.approx(0.12)
    assert [s["doc_id"] for s in row.sources] == ["it/vpn", "travel/booking"], "the closest sources are shown"
    assert parts.deliverer.delivered[0][1].status is Status.NOT_FOUND
    assert parts.tracing.spans[0].generations == [], "no generation is traced when there was no model call"


async def test_no_passages_or_a_missing_index_gives_not_found(parts: Parts) -> None:
    parts.searcher.passages = []
    empty = await parts.pipeline.run(await parts.ask())
    assert empty is not None and empty.status is Status.NOT_FOUND and empty.sources == []

    parts.searcher.error = IndexNotFound("no index for kb 'default'")
    missing = await parts.pipeline.run(await parts.ask())
    assert missing is not None and missing.status is Status.NOT_FOUND
    assert parts.composer.calls == [] and len(parts.deliverer.delivered) == 2


# --- playbooks ----------------------------------------------------------------------------------------------
async def test_kill_switch_off_gives_the_maintenance_reply_without_searching_or_composing(
        parts: Parts, settings: Settings) -> None:
    async with parts.db.asession() as session:
        await set_mode(session, GLOBAL_SCOPE, Mode.OFF, actor="slack:UADMIN", reason="incident 42")
    interaction_id = await parts.ask()
    answer = await parts.pipeline.run(interaction_id)

    assert answer is not None and answer.status is Status.MAINTENANCE
    assert answer.text == settings.maintenance_message
    assert parts.composer.calls == [] and parts.searcher.calls == []
    row = await parts.row(interaction_id)
    assert row.status == "maintenance" and row.fallback_reason == "incident 42"
    assert [a.text for _, a in parts.deliverer.delivered] == [settings.maintenance_message]


async def test_channel_switch_and_disabled_policy_affect_only_their_channel(parts: Parts) -> None:
    async with parts.db.asession() as session:
        await set_mode(session, channel_scope("slack", "C-RO"), Mode.RETRIEVAL_ONLY, actor="test")
        await set_policy(session, "slack", "C-OFF", enabled=False)
    retrieval_only = await parts.pipeline.run(await parts.ask(channel="C-RO", channel_type="channel"))
    disabled = await parts.pipeline.run(await parts.ask(channel="C-OFF", channel_type="channel"))
    normal = await parts.pipeline.run(await parts.ask(channel="C-ON", channel_type="channel"))

    assert retrieval_only is not None and disabled is not None and normal is not None
    assert [c.allow_llm for c in parts.composer.calls] == [False, True], "retrieval-only: no model call allowed"
    assert disabled.status is Status.MAINTENANCE
    assert normal.status is Status.ANSWERED


# --- exactly once and failures ----------------------------------------------------------------------------
async def test_a_final_interaction_is_not_answered_twice(parts: Parts) -> None:
    interaction_id = await parts.ask()
    first = await parts.pipeline.run(interaction_id)
    second = await parts.pipeline.run(interaction_id)  # e.g. arq redelivered the job

    assert first is not None and second is None
    assert len(parts.composer.calls) == 1 and len(parts.deliverer.delivered) == 1
    assert (await parts.row(interaction_id)).attempts == 1
    assert await parts.pipeline.run(987654) is None, "a missing interaction is skipped, not an error"


async def test_two_attempts_answering_at_once_record_and_deliver_one_answer(parts: Parts) -> None:
    """E.g. a worker whose lease lapsed during a Redis outage and the worker that took the job over."""
    interaction_id = await parts.ask()
    both_composing = asyncio.Barrier(2)
    compose = parts.composer.compose

    async def slow_compose(*args: Any, **kwargs: Any) -> Answer:
        await both_composing.wait()  # both attempts have started (counted) and are writing an answer
        return await compose(*args, **kwargs)

    parts.composer.compose = slow_compose  # type: ignore[method-assign]
    results = await asyncio.gather(parts.pipeline.run(interaction_id), parts.pipeline.run(interaction_id))

    assert sum(r is not None for r in results) == 1, "one attempt records the answer, the other stands down"
    assert len(parts.composer.calls) == 2 and len(parts.deliverer.delivered) == 1
    row = await parts.row(interaction_id)
    assert row.status == "answered" and row.attempts == 2 and row.delivery_state == "delivered"


async def test_a_retryable_delivery_failure_keeps_the_answer_and_hands_the_delivery_over(parts: Parts) -> None:
    parts.deliverer.errors = [DeliveryFailed("HTTP 500", retryable=True)]
    interaction_id = await parts.ask()
    answer = await parts.pipeline.run(interaction_id)

    assert answer is not None and answer.status is Status.ANSWERED
    row = await parts.row(interaction_id)
    assert row.status == "answered" and row.answer == answer.text, "the answer is kept"
    assert (row.delivery_state, row.delivery_attempts, row.delivery_error) == ("pending", 1, "HTTP 500")
    assert row.delivered_at is None and row.delivery_next_at is not None and "deliver" in row.latency_ms
    [(scheduled_id, key, defer_s)] = parts.scheduler.scheduled
    assert (scheduled_id, key) == (interaction_id, row.idempotency_key)
    assert 2.0 <= defer_s <= 2.2, "the first backoff (delivery_backoff_s, plus jitter)"
    assert await parts.pipeline.run(interaction_id) is None, "a retry of the answer job does not answer again"
    assert len(parts.composer.calls) == 1

    outcome = await parts.pipeline.deliver(interaction_id)  # the deliver job
    assert outcome.state is DeliveryState.DELIVERED and outcome.retry_in_s is None
    row = await parts.row(interaction_id)
    assert (row.delivery_state, row.delivery_attempts) == ("delivered", 2) and row.delivered_at is not None
    assert row.delivery == {"ok": True, "ts": "1700000000.000100"} and row.delivery_next_at is None
    assert {"deliver", "delivery_wait"} <= set(row.latency_ms)
    [(question, delivered)] = parts.deliverer.delivered
    assert delivered.text == answer.text and [s.doc_id for s in delivered.sources] == ["travel/per-diem"]
    assert delivered.interaction_id == interaction_id and delivered.status is Status.ANSWERED

    again = await parts.pipeline.deliver(interaction_id)  # a redelivered job, or the sweeper's
    assert again.state is None and len(parts.deliverer.attempts) == 2, "delivered once, never twice"


async def test_a_permanent_delivery_failure_is_recorded_as_failed_and_not_retried(parts: Parts) -> None:
    parts.deliverer.errors = [DeliveryFailed("channel_not_found", retryable=False)]
    interaction_id = await parts.ask()
    answer = await parts.pipeline.run(interaction_id)

    assert answer is not None and answer.status is Status.ANSWERED
    row = await parts.row(interaction_id)
    assert row.status == "answered" and row.answer == answer.text
    assert (row.delivery_state, row.delivery_attempts, row.delivery_error) == ("failed", 1, "channel_not_found")
    assert row.delivery == {"ok": False, "error": "channel_not_found"} and "deliver" in row.latency_ms
    assert parts.scheduler.scheduled == [], "not handed over: retrying cannot help"
    assert (await parts.pipeline.deliver(interaction_id)).state is None, "a failed delivery is not retried"
    assert len(parts.deliverer.attempts) == 1


async def test_an_unexpected_error_is_retried_and_the_delay_grows(parts: Parts) -> None:
    parts.deliverer.errors = [RuntimeError("boom"), DeliveryFailed("HTTP 502", retryable=True),
                              DeliveryFailed("HTTP 502", retryable=True)]
    interaction_id = await parts.ask()
    await parts.pipeline.run(interaction_id)
    second = await parts.pipeline.deliver(interaction_id)
    third = await parts.pipeline.deliver(interaction_id)
    assert second.state is DeliveryState.PENDING and third.state is DeliveryState.PENDING
    assert second.retry_in_s is not None and third.retry_in_s is not None
    assert 4.0 <= second.retry_in_s <= 4.4 and 8.0 <= third.retry_in_s <= 8.8, "exponential backoff"
    assert (await parts.pipeline.deliver(interaction_id)).state is DeliveryState.DELIVERED
    row = await parts.row(interaction_id)
    assert row.delivery_attempts == 4 and row.delivery_error == "HTTP 502", "the last error is kept"


def test_retry_delay_honours_retry_after_within_bounds(settings: Settings) -> None:
    assert 120.0 <= retry_delay(settings, 1, 120.0) <= 132.0, "Retry-After 120: at least 120 s"
    assert 300.0 <= retry_delay(settings, 1, 3600.0) <= 330.0, "capped at delivery_retry_after_max_s"
    assert 2.0 <= retry_delay(settings, 1, 0.0) <= 2.2, "never less than delivery_backoff_s"
    assert 60.0 <= retry_delay(settings, 12, None) <= 66.0, "backoff capped at delivery_backoff_max_s"


async def test_a_retry_after_is_honoured_by_the_hand_over(parts: Parts) -> None:
    parts.deliverer.errors = [DeliveryFailed("ratelimited", retryable=True, retry_after_s=120.0)]
    interaction_id = await parts.ask()
    await parts.pipeline.run(interaction_id)
    [(_, _, defer_s)] = parts.scheduler.scheduled
    assert defer_s >= 120.0


async def set_answered_at(parts: Parts, interaction_id: int, seconds_ago: float) -> None:
    async with parts.db.asession() as session:
        row = await session.get(Interaction, interaction_id)
        assert row is not None
        row.answered_at = utcnow() - timedelta(seconds=seconds_ago)
        session.add(row)
        await session.commit()


async def test_retries_stop_at_the_deadline_and_the_last_one_is_made_at_it(parts: Parts) -> None:
    parts.deliverer.errors = [DeliveryFailed("HTTP 503", retryable=True)] * 3
    interaction_id = await parts.ask()
    await parts.pipeline.run(interaction_id)

    await set_answered_at(parts, interaction_id, 899.0)  # one second before the 900 s deadline
    near = await parts.pipeline.deliver(interaction_id)
    assert near.state is DeliveryState.PENDING and near.retry_in_s is not None
    assert near.retry_in_s <= 1.0, "not scheduled past the deadline: the last attempt is made at it"

    await set_answered_at(parts, interaction_id, 901.0)
    last = await parts.pipeline.deliver(interaction_id)
    assert last.state is DeliveryState.FAILED and last.retry_in_s is None
    row = await parts.row(interaction_id)
    assert (row.delivery_state, row.delivery_attempts, row.delivery_error) == ("failed", 3, "HTTP 503")
    assert (await parts.pipeline.deliver(interaction_id)).state is None and len(parts.deliverer.attempts) == 3


async def test_a_redelivered_answer_job_resumes_a_pending_delivery(parts: Parts) -> None:
    """The worker died after recording the answer, before the delivery was handed over: arq runs the answer job
    again; it does not answer twice, but it hands the delivery over."""
    parts.pipeline.deliveries = None  # the hand-over of the first try is lost with the worker
    parts.deliverer.errors = [DeliveryFailed("HTTP 500", retryable=True)]
    interaction_id = await parts.ask()
    await parts.pipeline.run(interaction_id)
    parts.pipeline.deliveries = parts.scheduler

    assert await parts.pipeline.run(interaction_id) is None
    row = await parts.row(interaction_id)
    assert parts.scheduler.scheduled == [(interaction_id, row.idempotency_key, 0.0)]
    assert len(parts.composer.calls) == 1


async def test_the_local_chat_has_nothing_to_deliver(parts: Parts) -> None:
    question = Question(idempotency_key=f"local:{uuid.uuid4().hex}", platform=Platform.LOCAL, channel="c1",
                        user="u", text="What is the per diem?")
    interaction_id, _ = await parts.store.record_pending(question)
    await parts.pipeline.run(interaction_id)
    row = await parts.row(interaction_id)
    assert row.delivery_state == "delivered" and row.delivered_at == row.answered_at and row.delivery_attempts == 0
    assert "deliver" in row.latency_ms and parts.deliverer.attempts == []


async def test_a_platform_without_a_deliverer_is_recorded_as_failed(parts: Parts) -> None:
    question = Question(idempotency_key=f"teams:{uuid.uuid4().hex}", platform=Platform.TEAMS, channel="c1",
                        user="u", text="What is the per diem?")
    interaction_id, _ = await parts.store.record_pending(question)
    await parts.pipeline.run(interaction_id)
    row = await parts.row(interaction_id)
    assert row.delivery_state == "failed" and "no deliverer for teams" in (row.delivery_error or "")


async def test_fail_marks_the_error_and_tells_the_user_once(parts: Parts) -> None:
    interaction_id = await parts.ask()
    await parts.pipeline.fail(interaction_id, "TimeoutError('the model did not answer')")

    row = await parts.row(interaction_id)
    assert row.status == "error" and "did not answer" in (row.error or "")
    [(question, message)] = parts.deliverer.failures
    assert message == FAILURE_NOTICE and question.reply_target == {"channel": "D1", "thread_ts": "t1"}

    await parts.pipeline.fail(interaction_id, "again")  # already final: no second notice
    assert len(parts.deliverer.failures) == 1
    assert (await parts.row(interaction_id)).error == "TimeoutError('the model did not answer')"
    assert await parts.pipeline.run(interaction_id) is None, "a failed question is not answered later"
    assert row.delivery_state == "delivered" and row.delivery["ts"] == "1700000000.000200"


async def test_the_failure_notice_is_delivered_like_an_answer(parts: Parts) -> None:
    parts.deliverer.errors = [DeliveryFailed("HTTP 503", retryable=True)]
    interaction_id = await parts.ask()
    await parts.pipeline.fail(interaction_id, "TimeoutError()")
    row = await parts.row(interaction_id)
    assert (row.status, row.delivery_state, row.delivery_attempts) == ("error", "pending", 1)
    assert [i for i, _, _ in parts.scheduler.scheduled] == [interaction_id]

    assert (await parts.pipeline.deliver(interaction_id)).state is DeliveryState.DELIVERED
    [(_, message)] = parts.deliverer.failures
    assert message == FAILURE_NOTICE and parts.deliverer.delivered == [], "the notice, not an answer"
    assert (await parts.row(interaction_id)).delivery_state == "delivered"


async def test_fail_does_not_override_a_recorded_answer(parts: Parts) -> None:
    interaction_id = await parts.ask()
    await parts.pipeline.run(interaction_id)
    await parts.pipeline.fail(interaction_id, "late timeout")
    assert (await parts.row(interaction_id)).status == "answered"
    assert parts.deliverer.failures == []


# --- thread history and hooks ------------------------------------------------------------------------------
async def test_thread_history_reaches_the_composer(parts: Parts) -> None:
    first = await parts.ask("How many days of annual leave do I get?", thread="thread-A")
    await parts.pipeline.run(first)
    await parts.pipeline.run(await parts.ask("What is the VPN called?", thread="thread-B"))
    follow_up = await parts.ask("and can I carry them over?", thread="thread-A")
    await parts.pipeline.run(follow_up)

    history = parts.composer.calls[-1].history
    assert [(t.role, t.text) for t in history] == [
        ("user", "How many days of annual leave do I get?"),
        ("assistant", "Answer to 'How many days of annual leave do I get?' [1]."),
    ], "the same thread's earlier turn, and not the other thread's"
    assert parts.composer.calls[0].history == []


async def test_no_history_is_sent_when_history_turns_is_zero(parts: Parts, tmp_path: Path) -> None:
    parts.pipeline.settings = settings_for(tmp_path, history_turns=0)
    await parts.pipeline.run(await parts.ask("first", thread="t-zero"))
    await parts.pipeline.run(await parts.ask("second", thread="t-zero"))
    assert [c.history for c in parts.composer.calls] == [[], []]


async def test_a_failing_after_answer_hook_does_not_fail_the_answer(parts: Parts) -> None:
    seen: list[tuple[int, Status]] = []

    async def broken(interaction_id: int, answer: Answer) -> None:
        raise RuntimeError("metrics backend down")

    async def recording(interaction_id: int, answer: Answer) -> None:
        seen.append((interaction_id, answer.status))

    parts.pipeline.after_answer = [broken, recording]
    interaction_id = await parts.ask()
    answer = await parts.pipeline.run(interaction_id)

    assert answer is not None and answer.status is Status.ANSWERED
    assert seen == [(interaction_id, Status.ANSWERED)], "later hooks still run"
    assert (await parts.row(interaction_id)).delivery["ok"] is True
    assert (await parts.row(interaction_id)).delivery_state == "delivered"
    assert len(parts.deliverer.delivered) == 1


async def test_no_trace_id_leaves_the_interaction_untraced(parts: Parts) -> None:
    parts.tracing.trace_id = None  # tracing disabled or its backend unreachable
    interaction_id = await parts.ask()
    answer = await parts.pipeline.run(interaction_id)
    assert answer is not None and answer.status is Status.ANSWERED
    assert (await parts.row(interaction_id)).trace_id is None
