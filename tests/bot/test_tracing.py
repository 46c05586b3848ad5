"""Tracing against a local fake Langfuse: what one answer's trace looks like on the wire, scores, and that
tracing stays out of the way when it is off or Langfuse is down."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import httpx
import pytest

import bot.tracing as tracing
from bot.core.settings import Settings
from bot.core.types import Usage
from bot.tracing import FEEDBACK_SCORE, Tracer, hash_user
from knowledge.passage import Passage
from tests.fakes.langfuse_server import FakeLangfuse, free_port, start_fake_langfuse

QUESTION = "How many vacation days do I get in my first year?"
ANSWER = "You get 25 vacation days per year [1]."
FEEDBACK_REASON = "exactly what I needed"


class RecordingLog:
    """Stands in for the module's structlog logger: records (level, event, fields)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        def record(event: str, **fields: Any) -> None:
            self.events.append((level, event, fields))

        return record

    def at(self, level: str) -> list[tuple[str, dict[str, Any]]]:
        return [(event, fields) for lvl, event, fields in self.events if lvl == level]

    def text(self) -> str:
        return repr(self.events)


@pytest.fixture
def tracing_log(monkeypatch: pytest.MonkeyPatch) -> RecordingLog:
    recorder = RecordingLog()
    monkeypatch.setattr(tracing, "log", recorder)
    return recorder


def settings_for(fake: FakeLangfuse | None = None, *, url: str | None = None) -> Settings:
    if fake is None:
        return Settings(_env_file=None, langfuse_public_key=None, langfuse_secret_key=None)
    return Settings(
        _env_file=None,
        langfuse_public_key=fake.public_key,
        langfuse_secret_key=fake.secret_key,
        langfuse_host=url or fake.url,
    )


def passages() -> list[Passage]:
    common = dict(kb="default", knowledge_set="hr", location="hr/leave.md", text="Employees get 25 days.")
    return [
        Passage(chunk_id="leave#2", doc_id="hr/leave.md", title="Leave", heading="Vacation", score=0.83,
                index_version=4, dense_score=0.71, bm25_score=11.2, **common),
        Passage(chunk_id="leave#5", doc_id="hr/leave.md", title="Leave", heading="Carry-over", score=0.41,
                index_version=4, **common),
    ]


USAGE = Usage(input_tokens=1200, output_tokens=85, cache_read_tokens=900, cache_write_tokens=300)


def record_answer(
    tracer: Tracer,
    *,
    interaction_id: int = 42,
    user: str = "U024BE7LH",
    thread: str = "1712345678.000200",
    question: str = QUESTION,
    fallback: bool = False,
) -> str | None:
    with tracer.answer_trace(
        interaction_id=interaction_id,
        question=question,
        user=user,
        thread=thread,
        platform="slack",
        release="r7",
    ) as trace:
        time.sleep(0.06)  # so the backdated children fit inside the root
        trace.retrieval(passages(), latency_ms=20.0, query=question)
        trace.generation(
            model="claude-sonnet-4-5",
            input_messages=[{"role": "user", "content": question}],
            output_text=ANSWER,
            usage=USAGE,
            cost_usd=0.0048,
            latency_ms=30.0,
            fallback=fallback,
        )
        trace.finish(ANSWER, "answered")
    return trace.trace_id


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

        # Trace-level attributes, on every span: hashed user, thread as session, metadata and tags.
        for span in (root, retrieve, generate):
            assert span.attributes["user.id"] == hash_user("slack", "U024BE7LH")
            assert "U024BE7LH" not in repr(span.attributes)
            assert span.attributes["session.id"] == "1712345678.000200"
            assert span.attributes["langfuse.trace.name"] == "answer"
            assert span.json_attribute("langfuse.trace.metadata.interaction_id") == 42
            assert span.json_attribute("langfuse.trace.metadata.platform") == "slack"
            assert span.json_attribute("langfuse.trace.metadata.release") == "r7"
            assert {"platform:slack", "release:r7"} <= set(span.attributes["langfuse.trace.tags"])
            assert span.attributes["langfuse.version"] == "r7"
            assert span.attributes["langfuse.environment"] == "development"
        assert len(hash_user("slack", "U024BE7LH")) == 16

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


def test_a_langfuse_outage_never_breaks_answering(tracing_log: RecordingLog,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tracer = Tracer(settings_for(FakeLangfuse(), url=f"http://127.0.0.1:{free_port()}"), timeout_s=1)
    assert tracer.enabled
    started = time.monotonic()
    for n in range(2):
        trace_id = record_answer(tracer, interaction_id=n)
        assert trace_id is not None  # the trace exists locally even if it never arrives
        if n == 0:  # the SDK retries scores with backoff: one is enough to see the failure
            tracer.score(trace_id=trace_id, name=FEEDBACK_SCORE, value=0, comment=FEEDBACK_REASON)
        tracer.flush()
    tracer.shutdown()
    assert time.monotonic() - started < 15

    # One warning per channel for the whole outage, not one per batch, and none of the SDK's per-batch errors.
    warnings = tracing_log.at("warning")
    assert sorted(fields["channel"] for event, fields in warnings) == ["api", "traces"]
    assert {event for event, _ in warnings} == {"langfuse_unavailable"}
    sdk_lines = [r for r in caplog.records if r.name.startswith(("langfuse", "opentelemetry"))]
    assert [r for r in sdk_lines if r.levelno >= logging.WARNING] == []
    logged = tracing_log.text() + caplog.text
    assert QUESTION not in logged and FEEDBACK_REASON not in logged


def test_wrong_keys_are_reported_once_and_recovery_is_noticed(tracing_log: RecordingLog) -> None:
    with start_fake_langfuse() as fake:
        tracer = Tracer(settings_for(fake), timeout_s=1)
        fake.fail_with = 401
        for n in range(3):
            record_answer(tracer, interaction_id=n)
            tracer.flush()
        assert [fields["channel"] for _, fields in tracing_log.at("warning")] == ["traces"]
        assert "401" in tracing_log.at("warning")[0][1]["reason"]

        fake.fail_with = None
        trace_id = record_answer(tracer)
        tracer.flush()
        assert fake.span("answer", trace_id)
        assert ("langfuse_recovered", {"channel": "traces"}) in tracing_log.at("info")
        tracer.shutdown()


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
        assert outer.trace_id != inner_id
        assert fake.span("answer", inner_id).parent_span_id is None
        assert fake.span("answer", inner_id).attributes["user.id"] == hash_user("slack", "U2")
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
            assert {s.attributes["user.id"] for s in spans.values()} == {hash_user("slack", f"U{n}")}
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


def test_fake_langfuse_accepts_otlp_json_and_checks_auth() -> None:
    with start_fake_langfuse() as fake:
        export = {
            "resourceSpans": [{
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "x"}}]},
                "scopeSpans": [{
                    "scope": {"name": "manual"},
                    "spans": [{
                        "traceId": "0af7651916cd43dd8448eb211c80319c",
                        "spanId": "b7ad6b7169203331",
                        "parentSpanId": "00f067aa0ba902b7",
                        "name": "answer",
                        "startTimeUnixNano": "1000000",
                        "endTimeUnixNano": "3000000",
                        "attributes": [
                            {"key": "user.id", "value": {"stringValue": "abc"}},
                            {
                                "key": "langfuse.trace.tags",
                                "value": {"arrayValue": {"values": [{"stringValue": "a"}]}},
                            },
                        ],
                    }],
                }],
            }]
        }
        url = f"{fake.url}/api/public/otel/v1/traces"
        assert httpx.post(url, json=export, auth=(fake.public_key, fake.secret_key)).status_code == 200
        assert httpx.post(url, json=export, auth=(fake.public_key, "nope")).status_code == 401
        assert httpx.get(f"{fake.url}/api/public/health").json()["status"] == "OK"

        (span,) = fake.spans
        assert (span.name, span.trace_id, span.span_id, span.parent_span_id) == (
            "answer", "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "00f067aa0ba902b7")
        assert span.attributes == {"user.id": "abc", "langfuse.trace.tags": ["a"]}
        assert span.duration_ms == 2.0 and span.resource == {"service.name": "x"}
        assert fake.unauthorized == 1


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
