"""A Langfuse outage as one warning and one recovery line, instead of the SDK's error line per batch.

Three pieces share one :class:`OutageReporter`: the span exporter and the HTTP transport report each
success or failure to it, and the log filter drops the SDK's own per-failure lines (keeping the last one's
status text as the reason)::

    outage = OutageReporter()
    install_sdk_log_filter()
    exporter = ReportingSpanExporter(OTLPSpanExporter(...), outage)    # channel "traces": spans
    http = httpx.Client(transport=ReportingTransport(outage))          # channel "api": scores
    # Langfuse down:  langfuse_unavailable channel=traces reason="... 503 ..."  (once)
    # Langfuse back:  langfuse_recovered channel=traces                          (once)

``outage.sdk_error(operation, exc)`` is for exceptions from our own calls into the SDK: a warning the first
time per operation, then debug. Only exception types and status text are logged, never trace content.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from bot.core.log import get_logger

log = get_logger(__name__)

#: Loggers whose per-failure lines :class:`SdkOutageLogFilter` drops.
SDK_LOGGERS = ("langfuse", "opentelemetry.exporter.otlp.proto.http.trace_exporter")


class OutageReporter:
    """Turns a stream of failures into one warning per outage and one info line per recovery."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failing: set[str] = set()
        self._sdk_errors: set[str] = set()

    def failed(self, channel: str, reason: str) -> None:
        with self._lock:
            first = channel not in self._failing
            self._failing.add(channel)
        if first:
            log.warning("langfuse_unavailable", channel=channel, reason=reason)

    def ok(self, channel: str) -> None:
        with self._lock:
            recovered = channel in self._failing
            self._failing.discard(channel)
        if recovered:
            log.info("langfuse_recovered", channel=channel)

    def sdk_error(self, operation: str, exc: BaseException) -> None:
        """An exception from our own call into the SDK: a warning the first time per operation."""
        with self._lock:
            first = operation not in self._sdk_errors
            self._sdk_errors.add(operation)
        # The exception's type only: its message could quote trace content.
        emit = log.warning if first else log.debug
        emit("langfuse_tracing_error", operation=operation, error=type(exc).__name__)


class ReportingSpanExporter(SpanExporter):
    """The OTLP exporter, reporting failed exports through the outage reporter; never raises."""

    def __init__(self, inner: SpanExporter, outage: OutageReporter) -> None:
        self._inner = inner
        self._outage = outage

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        _suppressed.message = None
        try:
            result = self._inner.export(spans)
        except Exception as exc:  # the batch thread must survive anything
            self._outage.failed("traces", type(exc).__name__)
            return SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self._outage.ok("traces")
        else:
            self._outage.failed("traces", (_suppressed.message or "export failed")[:200])
        return result

    def shutdown(self) -> None:
        try:
            self._inner.shutdown()
        except Exception as exc:
            self._outage.sdk_error("exporter_shutdown", exc)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return self._inner.force_flush(timeout_millis)
        except Exception:
            return False


class ReportingTransport(httpx.BaseTransport):
    """Transport of the SDK's REST client (scores): reports failures once, passes everything through."""

    def __init__(self, outage: OutageReporter) -> None:
        self._inner = httpx.HTTPTransport()
        self._outage = outage

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self._inner.handle_request(request)
        except Exception as exc:
            self._outage.failed("api", type(exc).__name__)
            raise
        if response.status_code >= 500 or response.status_code in (401, 403, 429):
            self._outage.failed("api", f"HTTP {response.status_code}")
        elif response.status_code < 400:
            self._outage.ok("api")
        return response

    def close(self) -> None:
        self._inner.close()


#: The last per-failure SDK log line this thread suppressed (the exporter logs it, then returns FAILURE).
_suppressed = threading.local()


class SdkOutageLogFilter(logging.Filter):
    """Drops the SDK's per-batch failure lines: :class:`OutageReporter` reports an outage once instead."""

    #: (module, function) of the log calls that fire once per failed batch or request.
    _PER_FAILURE_CALLS = frozenset(
        {
            ("http", "export"),  # OTLP/HTTP client: retries, timeouts, refused connections, HTTP errors
            ("score_consumer", "upload"),  # langfuse: "Failed to send N scores"
            ("parse_error", "handle_fern_exception"),  # langfuse: explanation of an HTTP error
        }
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.module, record.funcName) not in self._PER_FAILURE_CALLS:
            return True
        if record.levelno >= logging.ERROR:
            _suppressed.message = record.getMessage()  # status and reason, never payload
        return False


_sdk_log_filter = SdkOutageLogFilter()


def install_sdk_log_filter() -> None:
    """Attach the filter to the SDK's loggers (once per process; idempotent)."""
    for name in SDK_LOGGERS:
        logger = logging.getLogger(name)
        if _sdk_log_filter not in logger.filters:
            logger.addFilter(_sdk_log_filter)
