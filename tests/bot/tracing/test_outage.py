"""A Langfuse outage never reaches the answer path and is reported once per outage, not once per batch."""

from __future__ import annotations

import logging
import time

import pytest

from bot.tracing import FEEDBACK_SCORE, Tracer
from bot.tracing.outage import OutageReporter, SdkOutageLogFilter
from tests.bot.tracing.helpers import FEEDBACK_REASON, QUESTION, RecordingLog, record_answer, settings_for
from tests.fakes.langfuse_server import FakeLangfuse, free_port, start_fake_langfuse


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


def test_the_reporter_warns_once_per_outage_and_notes_the_recovery(tracing_log: RecordingLog) -> None:
    reporter = OutageReporter()
    reporter.ok("traces")  # healthy: silent
    for _ in range(3):
        reporter.failed("traces", "HTTP 503")
    reporter.ok("traces")
    reporter.failed("traces", "HTTP 502")  # a second outage is reported again
    assert tracing_log.events == [
        ("warning", "langfuse_unavailable", {"channel": "traces", "reason": "HTTP 503"}),
        ("info", "langfuse_recovered", {"channel": "traces"}),
        ("warning", "langfuse_unavailable", {"channel": "traces", "reason": "HTTP 502"}),
    ]
    reporter.sdk_error("score", ValueError("quoted trace content"))
    reporter.sdk_error("score", ValueError("quoted trace content"))
    assert [level for level, event, _ in tracing_log.events if event == "langfuse_tracing_error"] == [
        "warning", "debug"]
    assert "quoted trace content" not in tracing_log.text()


def test_the_log_filter_drops_only_the_sdks_per_failure_lines() -> None:
    log_filter = SdkOutageLogFilter()

    def record(module: str, func: str, level: int = logging.ERROR) -> logging.LogRecord:
        made = logging.LogRecord("langfuse", level, f"/x/{module}.py", 1, "Failed to send 3 scores", None,
                                 None)
        made.funcName = func
        return made

    assert log_filter.filter(record("score_consumer", "upload")) is False
    assert log_filter.filter(record("http", "export", logging.WARNING)) is False
    assert log_filter.filter(record("client", "create_score")) is True
    assert log_filter.filter(record("score_consumer", "run")) is True
