"""Streaming through AnswerPipeline (issue 14): the in-memory parts of tests/bot/test_pipeline.py, a composer that
writes its answer word by word into the live answer, and a deliverer whose stream records every call.

What a user sees: the status, then the answer growing, then exactly the final answer with its sources — or, when
the platform fails midway, the complete answer delivered over the half-streamed message; never two answers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot import pipeline as pipeline_module
from bot.core.settings import Settings
from bot.core.types import Answer, Platform, Question, Source, Status, Usage
from bot.delivery import STREAM_REFS, DeliveryFailed
from bot.llm import GenerationConfig, TextSink, Turn
from bot.pipeline import AnswerPipeline
from bot.status_text import SEARCHING, WRITING
from feedback.db import Database
from feedback.interactions import InteractionStore
from knowledge.passage import Passage
from playbooks.killswitch import GLOBAL_SCOPE, Mode, set_mode
from tests.bot.test_pipeline import FakeDeliverer, FakeScheduler, FakeSearcher, FakeTracing, passage
from tests.conftest import settings_for

ANSWER = "The per diem in the US is USD 80 a day, meals included [1]."


@dataclass
class WordComposer:
    """Writes :data:`ANSWER` word by word into the sink; ``crash_after`` words: raises (the worker dies)."""

    crash_after: int | None = None
    on_word: Any = None  # an async callback after each word (the test's hook)
    calls: int = 0

    async def compose(self, question: str, history: list[Turn], passages: list[Passage], config: GenerationConfig,
                      *, allow_llm: bool = True, sink: TextSink | None = None) -> Answer:
        self.calls += 1
        if sink is not None:
            await sink.writing()
            words = ANSWER.split(" ")
            for n, word in enumerate(words):
                if self.crash_after is not None and n == self.crash_after:
                    raise RuntimeError("worker killed mid-stream")
                await sink.text(word if n == 0 else " " + word)
                if self.on_word is not None:
                    await self.on_word(n)
        first = passages[0]
        return Answer(text=ANSWER, model=config.model, usage=Usage(input_tokens=100, output_tokens=20),
                      sources=[Source(number=1, doc_id=first.doc_id, title=first.title, location=first.location)])


@dataclass
class RecordingStream:
    """An AnswerStream that records what the user would see; ``fail_on_append``: that append raises."""

    fail_on_append: int | None = None
    fail_finish: bool = False
    statuses: list[str] = field(default_factory=list)
    appended: list[str] = field(default_factory=list)
    finished: list[Answer] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)
    _refs: dict[str, Any] = field(default_factory=dict)

    @property
    def refs(self) -> dict[str, Any]:
        return self._refs

    async def status(self, text: str) -> None:
        self.statuses.append(text)

    async def append(self, text: str) -> None:
        if self.fail_on_append is not None and len(self.appended) == self.fail_on_append:
            raise DeliveryFailed("ratelimited", retryable=True)
        self.appended.append(text)
        self._refs = {"channel": "D1", "ts": "1700000000.000900"}  # the streamed message exists

    async def finish(self, answer: Answer) -> dict[str, Any]:
        if self.fail_finish:
            raise DeliveryFailed("HTTP 503", retryable=True)
        self.finished.append(answer)
        return dict(self._refs) or {"channel": "D1", "ts": "1700000000.000100"}

    async def abandon(self, text: str) -> dict[str, Any]:
        self.abandoned.append(text)
        return dict(self._refs)


@dataclass
class StreamingFakeDeliverer(FakeDeliverer):
    stream: RecordingStream | None = field(default_factory=RecordingStream)
    opened: int = 0

    async def open_stream(self, question: Question) -> RecordingStream | None:
        self.opened += 1
        return self.stream


@dataclass
class Parts:
    pipeline: AnswerPipeline
    store: InteractionStore
    searcher: FakeSearcher
    composer: WordComposer
    deliverer: StreamingFakeDeliverer
    db: Database

    @property
    def stream(self) -> RecordingStream:
        assert self.deliverer.stream is not None
        return self.deliverer.stream

    async def ask(self, text: str = "What is the per diem in the US?") -> int:
        question = Question(idempotency_key=f"test:{uuid.uuid4().hex}", platform=Platform.SLACK, workspace="T1",
                            channel="D1", thread="t1", user="U1", text=text, channel_type="im",
                            reply_target={"channel": "D1", "thread_ts": "t1", "placeholder_ts": "1700000000.000050"})
        interaction_id, _ = await self.store.record_pending(question)
        return interaction_id


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(tmp_path, retrieval_min_score=0.3, delivery_backoff_s=2.0)


@pytest.fixture
def parts(settings: Settings, database: Database) -> Parts:
    store = InteractionStore(database, user_salt="test-salt")
    searcher, composer, deliverer = FakeSearcher(), WordComposer(), StreamingFakeDeliverer()
    pipeline = AnswerPipeline(settings, database, store, searcher, composer, FakeTracing(),
                              {Platform.SLACK: deliverer}, deliveries=FakeScheduler())
    return Parts(pipeline, store, searcher, composer, deliverer, database)


async def test_the_answer_is_streamed_then_finished_with_its_sources(parts: Parts) -> None:
    interaction_id = await parts.ask()
    answer = await parts.pipeline.run(interaction_id)

    assert answer is not None and answer.status is Status.ANSWERED
    assert parts.stream.statuses == [SEARCHING.text, WRITING.text]
    assert len(parts.stream.appended) == len(ANSWER.split(" ")) and "".join(parts.stream.appended) == ANSWER
    assert [a.text for a in parts.stream.finished] == [ANSWER]
    assert [s.doc_id for s in parts.stream.finished[0].sources] == ["travel/per-diem"]
    assert parts.deliverer.attempts == [], "the stream's finish is the delivery: nothing posted besides it"
    row = await parts.store.get(interaction_id)
    assert row is not None and row.delivery_state == "delivered"
    assert row.delivery == {"channel": "D1", "ts": "1700000000.000900", "streamed": True}


async def test_not_found_and_the_fallback_are_delivered_at_once(parts: Parts, tmp_path: Path) -> None:
    parts.searcher.passages = [passage(dense=0.1)]  # too weak: "not found", no model call
    answer = await parts.pipeline.run(await parts.ask())

    assert answer is not None and answer.status is Status.NOT_FOUND
    assert parts.stream.appended == [] and parts.composer.calls == 0
    assert [a.status for a in parts.stream.finished] == [Status.NOT_FOUND]


async def test_a_platform_failing_midway_gets_the_whole_answer_over_the_half_streamed_message(parts: Parts) -> None:
    parts.stream.fail_on_append = 4
    interaction_id = await parts.ask()
    answer = await parts.pipeline.run(interaction_id)

    assert answer is not None and answer.text == ANSWER
    assert len(parts.stream.appended) == 4 and parts.stream.finished == [], "the broken stream is left alone"
    [(question, delivered)] = parts.deliverer.delivered
    assert delivered.text == ANSWER
    assert question.reply_target[STREAM_REFS] == {"channel": "D1", "ts": "1700000000.000900"}
    row = await parts.store.get(interaction_id)
    assert row is not None and row.delivery_state == "delivered"


async def test_a_failing_finish_is_retried_by_updating_the_streamed_message(parts: Parts) -> None:
    parts.stream.fail_finish = True
    interaction_id = await parts.ask()
    answer = await parts.pipeline.run(interaction_id)

    assert answer is not None and parts.deliverer.delivered == []
    assert [s[0] for s in parts.pipeline.deliveries.scheduled] == [interaction_id], "handed over, with backoff"
    row = await parts.store.get(interaction_id)
    assert row is not None and (row.delivery_state, row.delivery_attempts) == ("pending", 1)

    outcome = await parts.pipeline.deliver(interaction_id)  # the deliver job
    assert outcome.state is not None and outcome.state.value == "delivered"
    [(question, delivered)] = parts.deliverer.delivered
    assert delivered.text == ANSWER and question.reply_target[STREAM_REFS]["ts"] == "1700000000.000900"


async def test_a_job_retried_after_a_crash_mid_stream_replaces_the_streamed_message(parts: Parts) -> None:
    parts.composer.crash_after = 5
    interaction_id = await parts.ask()
    with pytest.raises(RuntimeError):
        await parts.pipeline.run(interaction_id)
    row = await parts.store.get(interaction_id)
    assert row is not None and row.status == "pending"
    assert row.delivery == {STREAM_REFS: {"channel": "D1", "ts": "1700000000.000900"}}, "recorded at once"

    parts.composer.crash_after = None
    answer = await parts.pipeline.run(interaction_id)  # arq retries the job

    assert answer is not None and answer.text == ANSWER
    assert parts.deliverer.opened == 1, "no second stream: the first one's message is replaced"
    [(question, delivered)] = parts.deliverer.delivered
    assert question.reply_target[STREAM_REFS]["ts"] == "1700000000.000900" and delivered.text == ANSWER
    assert parts.stream.finished == []


async def test_a_job_failing_for_good_after_streaming_turns_the_streamed_message_into_the_notice(
        parts: Parts) -> None:
    parts.composer.crash_after = 3
    interaction_id = await parts.ask()
    with pytest.raises(RuntimeError):
        await parts.pipeline.run(interaction_id)
    await parts.pipeline.fail(interaction_id, "RuntimeError('worker killed mid-stream')")

    [(question, _message)] = parts.deliverer.failures
    assert question.reply_target[STREAM_REFS]["ts"] == "1700000000.000900"


async def test_a_kill_switch_set_mid_stream_stops_it_with_the_maintenance_reply(
        parts: Parts, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline_module, "KILL_SWITCH_CHECK_S", 0.0)

    async def switch_off(n: int) -> None:
        if n == 2:
            async with parts.db.asession() as session:
                await set_mode(session, GLOBAL_SCOPE, Mode.OFF, actor="slack:UADMIN", reason="incident 7")

    parts.composer.on_word = switch_off
    interaction_id = await parts.ask()
    answer = await parts.pipeline.run(interaction_id)

    assert answer is not None and answer.status is Status.MAINTENANCE
    assert len(parts.stream.appended) == 4, "no more text after the switch was seen (at the next word)"
    assert parts.stream.abandoned == [settings.maintenance_message] and parts.stream.finished == []
    row = await parts.store.get(interaction_id)
    assert row is not None and row.status == "maintenance" and row.fallback_reason == "incident 7"
    assert row.delivery_state == "delivered"
