"""Tracing against a local fake Langfuse: what one answer's trace looks like on the wire, scores, the user
pseudonym, and that tracing stays out of the way when it is off."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

from bot.core.identity import hash_user
from bot.core.types import Usage
from bot.tracing import FEEDBACK_SCORE, Tracer
from tests.bot.tracing.helpers import (
    ANSWER,
    FEEDBACK_REASON,
    QUESTION,
    SALT,
    RecordingLog,
    passages,
    record_answer,
    settings_for,
)
from tests.fakes.langfuse_server import start_fake_langfuse


def test_one_answer_is_one_trace_with_retrieve_and_generate(tracing_log: RecordingLog,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with start_fake_langfuse() as fake:
        tracer = Tracer(settings_for(fake))
        assert tracer.enabled
        trace_id = record_answer(tracer)
        tracer.flush()

        assert trace_id is not None and len(trace_id) == 32
        assert sorted(s.name for s in fake.trace(trace_id)) == ["answer", "generate", "retrieve"]
        assert len(fake.spans) == 3
        root, retrieve, generate = (fake.span(n, trace_id) for n in ("answer", "retrieve", "generate"))

        # Tree: retrieve and generate hang under the root answer span.
        assert root.parent_span_id is None
        assert retrieve.parent_span_id == root.span_id
        assert generate.parent_span_id == root.span_id
        assert root.scope == "langfuse-sdk" and root.scope_attributes["public_key"] == fake.public_key

        # Trace-level attributes, on every span: the user's pseudonym, thread as session, metadata and tags.
        for span in (root, retrieve, generate):
            assert span.attributes["user.id"] == hash_user("U024BE7LH", SALT)
            assert "U024BE7LH" not in repr(span.attributes)
            assert span.attributes["session.id"] == "1712345678.000200"
            assert span.attributes["langfuse.trace.name"] == "answer"
            assert span.json_attribute("langfuse.trace.metadata.interaction_id") == 42
            assert span.json_attribute("langfuse.trace.metadata.platform") == "slack"
            assert span.json_attribute("langfuse.trace.metadata.release") == "r7"
            assert {"platform:slack", "release:r7"} <= set(span.attributes["langfuse.trace.tags"])
            assert span.attributes["langfuse.version"] == "r7"
            assert span.attributes["langfuse.environment"] == "development"

        # Root: the question in, the answer out, the status as trace metadata and tag.
        assert root.attributes["langfuse.observation.type"] == "span"
        assert root.attributes["langfuse.observation.input"] == QUESTION
        assert root.attributes["langfuse.observation.output"] == ANSWER
        assert root.json_attribute("langfuse.trace.metadata.status") == "answered"
        assert "status:answered" in root.attributes["langfuse.trace.tags"]

        # Retrieve: the query in, ranked doc ids and scores out, timed by the reported latency.
        assert retrieve.attributes["langfuse.observation.type"] == "retriever"
        assert retrieve.attributes["langfuse.observation.input"] == QUESTION
        hits = retrieve.json_attribute("langfuse.observation.output")
        assert [(h["rank"], h["doc_id"], h["chunk_id"], h["score"]) for h in hits] == [
            (1, "hr/leave.md", "leave#2", 0.83),
            (2, "hr/leave.md", "leave#5", 0.41),
        ]
        assert retrieve.json_attribute("langfuse.observation.metadata.hits") == 2
        assert retrieve.duration_ms == pytest.approx(20.0, abs=1.0)

        # Generate: model, usage in Anthropic's terms, cost in US dollars.
        assert generate.attributes["langfuse.observation.type"] == "generation"
        assert generate.attributes["langfuse.observation.model.name"] == "claude-sonnet-4-5"
        assert generate.json_attribute("langfuse.observation.usage_details") == {
            "input": 1200,
            "output": 85,
            "cache_read_input_tokens": 900,
            "cache_creation_input_tokens": 300,
        }
        assert generate.json_attribute("langfuse.observation.cost_details") == {"total": 0.0048}
        messages = generate.json_attribute("langfuse.observation.input")
        assert messages == [{"role": "user", "content": QUESTION}]
        assert generate.attributes["langfuse.observation.output"] == ANSWER
        assert generate.json_attribute("langfuse.observation.metadata.fallback") is False
        assert generate.duration_ms == pytest.approx(30.0, abs=1.0)
        assert root.start_ns <= retrieve.start_ns and generate.end_ns <= root.end_ns

        # Wire format as Langfuse expects it: OTLP protobuf, gzip, Basic auth, ingestion v4.
        trace_requests = [r for r in fake.requests if r.path == "/api/public/otel/v1/traces"]
        assert trace_requests and all(r.authorized for r in trace_requests)
        assert trace_requests[0].content_type == "application/x-protobuf"
        assert trace_requests[0].headers["content-encoding"] == "gzip"
        assert trace_requests[0].headers["x-langfuse-ingestion-version"] == "4"
        assert fake.unauthorized == 0
        tracer.shutdown()

    # Message text went to Langfuse only.
    logged = tracing_log.text() + caplog.text
    assert QUESTION not in logged and ANSWER not in logged
    assert tracing_log.at("warning") == []


def test_fallback_generation_is_marked(tracing_log: RecordingLog) -> None:
    with start_fake_langfuse() as fake:
        tracer = Tracer(settings_for(fake))
        trace_id = record_answer(tracer, fallback=True)
        tracer.flush()
        generate = fake.span("generate", trace_id)
        assert generate.json_attribute("langfuse.observation.metadata.fallback") is True
        assert generate.attributes["langfuse.observation.level"] == "WARNING"
        tracer.shutdown()


def test_feedback_score_reaches_langfuse(tracing_log: RecordingLog) -> None:
    with start_fake_langfuse() as fake:
        tracer = Tracer(settings_for(fake))
        trace_id = record_answer(tracer)
        assert trace_id is not None
        tracer.score(trace_id=trace_id, name=FEEDBACK_SCORE, value=1, comment=FEEDBACK_REASON)
        tracer.score(trace_id=trace_id, name="thumbs", value=0, data_type="BOOLEAN")
        tracer.flush()

        assert len(fake.scores) == 2
        feedback, thumbs = sorted(fake.scores, key=lambda s: s["name"] != FEEDBACK_SCORE)
        assert feedback["traceId"] == trace_id
        assert feedback["name"] == FEEDBACK_SCORE
        assert feedback["value"] == 1.0
        assert feedback["comment"] == FEEDBACK_REASON
        assert thumbs["value"] == 0.0 and thumbs["dataType"] == "BOOLEAN"
        assert all(r.authorized for r in fake.requests if r.path == "/api/public/scores")
        tracer.shutdown()
    assert FEEDBACK_REASON not in tracing_log.text()


def test_without_keys_the_tracer_is_inert_and_silent(
    monkeypatch: pytest.MonkeyPatch,
    tracing_log: RecordingLog,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import langfuse

    def no_client(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a Langfuse client was created without keys")

    monkeypatch.setattr(langfuse, "Langfuse", no_client)
    caplog.set_level(logging.DEBUG)
    threads_before = {t.ident for t in threading.enumerate()}

    tracer = Tracer(settings_for(None))
    assert tracer.enabled is False
    assert tracer._client is None
    trace_id = record_answer(tracer)
    assert trace_id is None
    tracer.score(trace_id="0" * 32, name=FEEDBACK_SCORE, value=0)
    tracer.flush()
    tracer.shutdown()

    assert {t.ident for t in threading.enumerate()} <= threads_before
    assert caplog.records == []
    assert tracing_log.events == []
    assert capsys.readouterr() == ("", "")


def test_an_exception_in_the_answer_path_propagates_and_marks_the_trace(tracing_log: RecordingLog) -> None:
    with start_fake_langfuse() as fake:
        tracer = Tracer(settings_for(fake))
        with pytest.raises(RuntimeError, match="llm exploded"):
            with tracer.answer_trace(
                interaction_id=7, question=QUESTION, user="U1", thread="t", platform="teams", release=None
            ) as trace:
                raise RuntimeError("llm exploded")
        trace.finish(ANSWER, "answered")  # after the trace ended: ignored, no error
        tracer.flush()
        root = fake.span("answer", trace.trace_id)
        assert root.attributes["langfuse.observation.level"] == "ERROR"
        assert root.attributes["langfuse.observation.status_message"] == "RuntimeError"
        assert root.status_code == 2
        assert "langfuse.observation.output" not in root.attributes
        assert root.attributes["langfuse.trace.tags"] == ["platform:teams"]
        tracer.shutdown()
    assert tracing_log.at("warning") == []


def test_each_answer_is_its_own_trace_even_when_nested(tracing_log: RecordingLog) -> None:
    with start_fake_langfuse() as fake:
        tracer = Tracer(settings_for(fake))
        with tracer.answer_trace(interaction_id=1, question="outer", user="U1", thread="t1", platform="slack",
                                 release=None) as outer:
            inner_id = record_answer(tracer, interaction_id=2, user="U2", thread="t2")
            outer.finish("outer answer", "not_found")
        tracer.flush()
        assert outer.trace_id is not None and outer.trace_id != inner_id
        assert fake.span("answer", inner_id).parent_span_id is None
        assert fake.span("answer", inner_id).attributes["user.id"] == hash_user("U2", SALT)
        assert fake.span("answer", outer.trace_id).attributes["session.id"] == "t1"
        assert [s.name for s in fake.trace(outer.trace_id)] == ["answer"]
        tracer.shutdown()


async def test_concurrent_answers_in_one_async_worker_stay_apart(tracing_log: RecordingLog) -> None:
    async with start_fake_langfuse() as fake:
        tracer = Tracer(settings_for(fake))

        async def answer(n: int) -> str | None:
            with tracer.answer_trace(interaction_id=n, question=f"question {n}", user=f"U{n}", thread=f"t{n}",
                                     platform="slack", release="r1") as trace:
                await asyncio.sleep(0.02)
                trace.retrieval(passages(), latency_ms=5.0, query=f"question {n}")
                await asyncio.sleep(0.01)
                trace.generation("claude-haiku-4-5", [], f"answer {n}", Usage(), 0.0, 5.0, fallback=False)
                trace.finish(f"answer {n}", "answered")
            return trace.trace_id

        trace_ids = await asyncio.gather(*(answer(n) for n in range(6)))
        await tracer.ashutdown()  # shutdown flushes what is still queued

        assert len(set(trace_ids)) == 6
        for n, trace_id in enumerate(trace_ids):
            assert trace_id is not None
            spans = {s.name: s for s in fake.trace(trace_id)}
            assert sorted(spans) == ["answer", "generate", "retrieve"]
            assert {s.attributes["user.id"] for s in spans.values()} == {hash_user(f"U{n}", SALT)}
            assert {s.attributes["session.id"] for s in spans.values()} == {f"t{n}"}
            assert spans["answer"].attributes["langfuse.observation.input"] == f"question {n}"
            assert spans["generate"].attributes["langfuse.observation.output"] == f"answer {n}"
            assert spans["retrieve"].parent_span_id == spans["answer"].span_id


def test_tracers_sharing_keys_keep_to_their_own_host(tracing_log: RecordingLog) -> None:
    """The SDK caches its machinery per public key; each Tracer still exports to its own host, once."""
    with start_fake_langfuse() as first, \
            start_fake_langfuse(public_key=first.public_key, secret_key=first.secret_key) as second:
        one = Tracer(settings_for(first))
        two = Tracer(settings_for(second))
        first_id = record_answer(one, interaction_id=1)
        second_id = record_answer(two, interaction_id=2)
        one.flush()
        two.flush()
        assert {s.trace_id for s in first.spans} == {first_id}
        assert {s.trace_id for s in second.spans} == {second_id}
        assert len(first.spans) == len(second.spans) == 3
        one.shutdown()

        # After a shutdown, a new tracer with the same keys starts afresh.
        three = Tracer(settings_for(first))
        third_id = record_answer(three, interaction_id=3)
        three.score(trace_id=third_id or "", name=FEEDBACK_SCORE, value=1)
        three.flush()
        assert len(first.spans_named("answer")) == 2 and [s["traceId"] for s in first.scores] == [third_id]
        two.shutdown()
        three.shutdown()
    assert tracing_log.at("warning") == []


def test_sdk_tracing_switched_off_by_its_env_var_sends_nothing(
    monkeypatch: pytest.MonkeyPatch, tracing_log: RecordingLog
) -> None:
    monkeypatch.setenv("LANGFUSE_TRACING_ENABLED", "false")
    with start_fake_langfuse() as fake:
        tracer = Tracer(settings_for(fake))
        assert record_answer(tracer) is None
        tracer.flush()
        tracer.shutdown()
        assert fake.spans == []
    assert tracer.enabled is False
    assert tracing_log.at("warning") == []
    assert [event for event, _ in tracing_log.at("info")] == ["langfuse_tracing_switched_off"]


def test_the_traced_user_is_the_kernel_pseudonym_under_the_configured_salt(tracing_log: RecordingLog) -> None:
    """Langfuse's user id is the one the database stores: ``hash_user(user, settings.user_hash_salt)``."""
    with start_fake_langfuse() as fake:
        settings = settings_for(fake)
        tracer = Tracer(settings)
        trace_id = record_answer(tracer, user="U024BE7LH")
        no_user_id = record_answer(tracer, user="")  # e.g. a system message: no user id at all
        tracer.flush()
        tracer.shutdown()
        traced = fake.span("answer", trace_id).attributes["user.id"]
        assert traced == hash_user("U024BE7LH", settings.user_hash_salt)
        assert traced != hash_user("U024BE7LH", "deskmate-development-salt")  # the settings' salt
        assert "user.id" not in fake.span("answer", no_user_id).attributes
