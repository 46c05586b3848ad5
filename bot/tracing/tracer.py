"""Langfuse tracing: one trace per answer, feedback as scores.

A trace is a root span ``answer`` (input: the question, output: the answer) with a child ``retrieve`` (input:
the query, output: the ranked doc ids and scores) and a child generation ``generate`` (model, messages, output
text, token usage, cost). The user id is hashed before it leaves the process, the thread is the Langfuse
session, and platform, release and interaction id travel as trace metadata and tags.

Langfuse 5 is OpenTelemetry-based: a background thread batches spans and exports them over OTLP/HTTP to
``{host}/api/public/otel/v1/traces``; another sends scores to ``/api/public/scores``. A :class:`Tracer` owns
its ``TracerProvider``, exporter and HTTP client, so it neither installs nor depends on the process-global
OpenTelemetry provider, and two tracers never export each other's spans.

Tracing is best effort. Without keys the tracer is inert: no client, no threads, no log line. With keys, a
Langfuse outage never reaches the answer path: SDK errors are caught, and a failing export is reported once as
a warning (its recovery once as info) instead of the SDK's error line per batch. Message text goes to
Langfuse, where it is the trace's content, and never to logs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from bot.core.log import get_logger
from bot.core.settings import Settings
from bot.core.types import Usage
from knowledge.passage import Passage

if TYPE_CHECKING:  # importing langfuse has side effects (a handler on the httpx logger): only when enabled
    from langfuse import Langfuse

log = get_logger(__name__)

#: Score name for 👍 (1) / 👎 (0) feedback.
FEEDBACK_SCORE = "user_feedback"
#: Hex characters kept of the user-id hash: 64 bits, ample to tell an organisation's users apart.
USER_HASH_CHARS = 16
OTLP_TRACES_PATH = "/api/public/otel/v1/traces"
#: Langfuse drops longer propagated values (user id, session id, tags, metadata values).
_MAX_PROPAGATED_CHARS = 200


def hash_user(platform: str, user: str) -> str:
    """The pseudonymous user id sent to Langfuse: a truncated sha256 of platform and platform user id."""
    return hashlib.sha256(f"{platform}:{user}".encode()).hexdigest()[:USER_HASH_CHARS]


def _session_id(thread: str) -> str | None:
    """The thread as session id; hashed only where Langfuse would drop it (non-ASCII, over 200 chars)."""
    if not thread:
        return None
    if thread.isascii() and len(thread) <= _MAX_PROPAGATED_CHARS:
        return thread
    return "thread-" + hashlib.sha256(thread.encode()).hexdigest()[:32]


def _clip(value: str, limit: int = _MAX_PROPAGATED_CHARS) -> str:
    return value[:limit]


# --- failure reporting ---------------------------------------------------------------------------------
class _OutageReporter:
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


class _ReportingSpanExporter(SpanExporter):
    """The OTLP exporter, reporting failed exports through the outage reporter; never raises."""

    def __init__(self, inner: SpanExporter, outage: _OutageReporter) -> None:
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


class _ReportingTransport(httpx.BaseTransport):
    """Transport of the SDK's REST client (scores): reports failures once, passes everything through."""

    def __init__(self, outage: _OutageReporter) -> None:
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


class _SdkOutageLogFilter(logging.Filter):
    """Drops the SDK's per-batch failure lines: :class:`_OutageReporter` reports an outage once instead."""

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


_sdk_log_filter = _SdkOutageLogFilter()


def _install_sdk_log_filter() -> None:
    for name in ("langfuse", "opentelemetry.exporter.otlp.proto.http.trace_exporter"):
        logger = logging.getLogger(name)
        if _sdk_log_filter not in logger.filters:
            logger.addFilter(_sdk_log_filter)


# --- one trace -----------------------------------------------------------------------------------------
@dataclass
class _LiveTrace:
    client: Langfuse
    otel_tracer: otel_trace.Tracer
    root: Any  # langfuse.LangfuseSpan
    root_span: otel_trace.Span
    context: otel_context.Context  # root as current span, trace attributes propagated
    tags: list[str]
    outage: _OutageReporter


class TraceHandle:
    """What the answer path records into its trace. Every method is a no-op when tracing is off or broken."""

    def __init__(self, live: _LiveTrace | None = None) -> None:
        self._live = live
        self.trace_id: str | None = live.root.trace_id if live else None

    def retrieval(self, passages: Sequence[Passage], latency_ms: float, query: str) -> None:
        """A ``retrieve`` span that ended now and lasted ``latency_ms``: the query in, ranked hits out."""
        if self._live is None:
            return
        try:
            from langfuse import LangfuseRetriever

            hits = [
                {
                    "rank": rank,
                    "doc_id": p.doc_id,
                    "chunk_id": p.chunk_id,
                    "title": p.title,
                    "heading": p.heading,
                    "knowledge_set": p.knowledge_set,
                    "score": p.score,
                    "dense_score": p.dense_score,
                    "bm25_score": p.bm25_score,
                }
                for rank, p in enumerate(passages, start=1)
            ]
            metadata: dict[str, Any] = {"hits": len(hits), "latency_ms": latency_ms}
            if passages:
                metadata |= {"top_score": passages[0].score, "index_version": passages[0].index_version}
            self._child(
                LangfuseRetriever, "retrieve", latency_ms, input=query, output=hits, metadata=metadata
            )
        except Exception as exc:
            self._live.outage.sdk_error("retrieval", exc)

    def generation(
        self,
        model: str,
        input_messages: Any,
        output_text: str,
        usage: Usage,
        cost_usd: float,
        latency_ms: float,
        fallback: bool,
        *,
        model_parameters: Mapping[str, Any] | None = None,
    ) -> None:
        """A ``generate`` generation that ended now: model, messages, text, usage, cost in US dollars.

        ``fallback`` marks an extractive answer (the model failed or was skipped); it stays a generation, so
        the trace shows what the user got, at level WARNING.
        """
        if self._live is None:
            return
        try:
            from langfuse import LangfuseGeneration

            self._child(
                LangfuseGeneration,
                "generate",
                latency_ms,
                input=input_messages,
                output=output_text,
                metadata={"fallback": fallback, "latency_ms": latency_ms},
                model=model,
                model_parameters=dict(model_parameters) if model_parameters else None,
                # Langfuse's names for Anthropic's token kinds, so its model prices apply too.
                usage_details={
                    "input": usage.input_tokens,
                    "output": usage.output_tokens,
                    "cache_read_input_tokens": usage.cache_read_tokens,
                    "cache_creation_input_tokens": usage.cache_write_tokens,
                },
                cost_details={"total": float(cost_usd)},
                level="WARNING" if fallback else None,
                status_message="extractive fallback, not written by the model" if fallback else None,
            )
        except Exception as exc:
            self._live.outage.sdk_error("generation", exc)

    def finish(self, answer_text: str, status: str) -> None:
        """The answer as delivered: the trace's output, its status as trace metadata and a ``status:`` tag."""
        if self._live is None:
            return
        try:
            from langfuse import LangfuseOtelSpanAttributes as Attr

            live, status = self._live, str(status)
            level = "ERROR" if status == "error" else None
            live.root.update(output=answer_text, metadata={"status": status}, level=level)
            live.root_span.set_attribute(f"{Attr.TRACE_METADATA}.status", json.dumps(status))
            live.root_span.set_attribute(Attr.TRACE_TAGS, [*live.tags, _clip(f"status:{status}")])
        except Exception as exc:
            self._live.outage.sdk_error("finish", exc)

    def _child(self, observation_class: type, name: str, latency_ms: float, **fields: Any) -> None:
        """A child of the root that started ``latency_ms`` ago and ends now.

        The pipeline reports a step once it is done and the SDK's ``start_observation`` takes no start time,
        so the span is started on the SDK's own tracer and wrapped in the SDK's observation class, which
        writes the Langfuse attributes exactly as ``start_observation`` would.
        """
        live = self._live
        assert live is not None
        end_ns = time.time_ns()
        latency = float(latency_ms) if isinstance(latency_ms, (int, float)) else 0.0
        duration_ns = int(latency * 1_000_000) if math.isfinite(latency) and latency > 0 else 0
        start_ns = end_ns - duration_ns
        root_start = getattr(live.root_span, "start_time", None)
        if isinstance(root_start, int):
            start_ns = max(start_ns, root_start)  # a child never starts before its trace
        span = live.otel_tracer.start_span(name, context=live.context, start_time=start_ns)
        try:
            fields = {key: value for key, value in fields.items() if value is not None}
            observation_class(otel_span=span, langfuse_client=live.client, **fields)
        finally:
            span.end(end_time=end_ns)

    def _fail(self, exc: BaseException) -> None:
        """The answer path raised inside the trace: the root becomes an ERROR (the type only, no message)."""
        if self._live is None:
            return
        try:
            self._live.root.update(level="ERROR", status_message=type(exc).__name__)
        except Exception as sdk_exc:
            self._live.outage.sdk_error("fail", sdk_exc)

    def _end(self) -> None:
        self._live = None  # the root span is ending: later calls are ignored


# --- the tracer ----------------------------------------------------------------------------------------
class _SwitchedOff(Exception):
    """Keys are set, but the operator turned the SDK off through its own environment variable."""


class Tracer:
    """No-op when Langfuse keys are not configured: no client created, nothing logged.

    One per process (web or worker), shared by all asyncio tasks: the active span lives in ``contextvars``,
    so concurrent answers never mix. Sending happens on background threads; call :meth:`shutdown` (or
    :meth:`ashutdown` from async code) when the process stops so the last batch goes out.
    """

    def __init__(
        self, settings: Settings, *, timeout_s: int = 5, flush_interval_s: float | None = None
    ) -> None:
        """``timeout_s`` bounds each export with its retries; ``flush_interval_s`` is how often queued data is
        sent (SDK default: 5 s for spans, 1 s for scores)."""
        self.enabled = False
        self._client: Langfuse | None = None
        self._provider: TracerProvider | None = None
        self._otel_tracer: otel_trace.Tracer | None = None
        self._http: httpx.Client | None = None
        self._public_key: str | None = None
        self._resources: Any = None
        self._outage = _OutageReporter()
        self._lifecycle_lock = threading.Lock()
        self._stopped = False
        if not settings.langfuse_enabled():
            return
        try:
            self._start(settings, timeout_s=timeout_s, flush_interval_s=flush_interval_s)
            self.enabled = True
        except _SwitchedOff as off:
            log.info("langfuse_tracing_switched_off", by=str(off))
            self._release_resources()
        except Exception as exc:
            log.warning("langfuse_init_failed", error=type(exc).__name__, host=settings.langfuse_host)
            self._release_resources()

    def _start(self, settings: Settings, *, timeout_s: int, flush_interval_s: float | None) -> None:
        from langfuse import Langfuse, LangfuseOtelSpanAttributes
        from langfuse import __version__ as sdk_version

        try:
            from langfuse._client.constants import LANGFUSE_TRACER_NAME
        except ImportError:  # pragma: no cover - the constant moved in a later SDK
            LANGFUSE_TRACER_NAME = "langfuse-sdk"

        public_key, secret_key = settings.langfuse_public_key or "", settings.langfuse_secret_key or ""
        host = settings.langfuse_host.rstrip("/")
        _install_sdk_log_filter()
        # Our own provider: otherwise the SDK registers a process-global one, which a second tracer (another
        # host, a test) would share and then export every span twice.
        self._provider = TracerProvider(
            resource=Resource.create(
                {"service.name": "deskmate", LangfuseOtelSpanAttributes.ENVIRONMENT: settings.environment}
            )
        )
        # The exporter the SDK builds by default (same endpoint and headers), wrapped to report failures once.
        basic = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode("ascii")
        exporter = OTLPSpanExporter(
            endpoint=f"{host}{OTLP_TRACES_PATH}",
            headers={
                "Authorization": f"Basic {basic}",
                "x-langfuse-sdk-name": "python",
                "x-langfuse-sdk-version": sdk_version,
                "x-langfuse-public-key": public_key,
                "x-langfuse-ingestion-version": "4",
            },
            timeout=timeout_s,
            compression=Compression.Gzip,
        )
        self._http = httpx.Client(timeout=timeout_s, transport=_ReportingTransport(self._outage))
        # The SDK caches its background machinery per public key for the whole process. A cached entry would
        # carry another tracer's host and provider, so this tracer always starts a fresh one.
        self._public_key = public_key
        self._forget_sdk_cache(only_if_ours=False)
        self._client = Langfuse(
            public_key=public_key,
            secret_key=secret_key,
            base_url=host,
            timeout=timeout_s,
            httpx_client=self._http,
            tracing_enabled=True,
            flush_interval=flush_interval_s,
            environment=settings.environment,
            sample_rate=1.0,
            tracer_provider=self._provider,
            span_exporter=_ReportingSpanExporter(exporter, self._outage),
        )
        self._resources = getattr(self._client, "_resources", None)
        bound_provider = getattr(self._resources, "tracer_provider", self._provider)
        if bound_provider is None:  # LANGFUSE_TRACING_ENABLED=false: the SDK sends nothing, scores included
            raise _SwitchedOff("LANGFUSE_TRACING_ENABLED")
        if bound_provider is not self._provider:
            raise RuntimeError("the Langfuse SDK did not bind to this tracer's provider")
        # Same name, version and attributes as the SDK's tracer: the provider hands back that very tracer.
        self._otel_tracer = self._provider.get_tracer(
            LANGFUSE_TRACER_NAME, sdk_version, attributes={"public_key": public_key}
        )
        log.info("langfuse_tracing_enabled", host=host, environment=settings.environment)

    @contextmanager
    def answer_trace(
        self,
        *,
        interaction_id: int | None,
        question: str,
        user: str,
        thread: str,
        platform: str,
        release: str | None,
    ) -> Iterator[TraceHandle]:
        """One trace for one answer; its root span ``answer`` lasts as long as the ``with`` block.

        Exceptions from the block propagate unchanged (the root is marked ERROR with the exception's type);
        exceptions from tracing never do. Fine in async code: each task has its own active span.
        """
        stack = ExitStack()
        handle = self._open_trace(stack, interaction_id, question, user, thread, str(platform), release)
        try:
            yield handle
        except BaseException as exc:
            handle._fail(exc)
            handle._end()
            self._close_trace(stack, exc)
            raise
        handle._end()
        self._close_trace(stack, None)

    def _open_trace(
        self,
        stack: ExitStack,
        interaction_id: int | None,
        question: str,
        user: str,
        thread: str,
        platform: str,
        release: str | None,
    ) -> TraceHandle:
        if not self.enabled or self._client is None or self._otel_tracer is None:
            return TraceHandle()
        try:
            from langfuse import propagate_attributes

            tags = [_clip(f"platform:{platform}")] + ([_clip(f"release:{release}")] if release else [])
            # Metadata values are limited once JSON-encoded: leave room for the quotes.
            metadata: dict[str, Any] = {"platform": _clip(platform, 190)}
            if interaction_id is not None:
                metadata["interaction_id"] = interaction_id
            if release:
                metadata["release"] = _clip(release, 190)
            # An empty context: an answer is always its own trace, even inside another span, and inherits
            # no trace attributes from an enclosing one.
            stack.callback(otel_context.detach, otel_context.attach(otel_context.Context()))
            stack.enter_context(
                propagate_attributes(
                    user_id=hash_user(platform, user) if user else None,
                    session_id=_session_id(thread),
                    metadata=metadata,
                    version=_clip(release) if release else None,
                    tags=tags,
                    trace_name="answer",
                )
            )
            root = stack.enter_context(
                self._client.start_as_current_observation(name="answer", as_type="span", input=question)
            )
            root_span = otel_trace.get_current_span()
            if not root_span.is_recording():  # the SDK's tracer is off (LANGFUSE_TRACING_ENABLED=false, ...)
                return TraceHandle()
            live = _LiveTrace(
                client=self._client,
                otel_tracer=self._otel_tracer,
                root=root,
                root_span=root_span,
                context=otel_context.get_current(),
                tags=tags,
                outage=self._outage,
            )
            return TraceHandle(live)
        except Exception as exc:
            self._outage.sdk_error("answer_trace", exc)
            self._close_trace(stack, None)
            return TraceHandle()

    def _close_trace(self, stack: ExitStack, exc: BaseException | None) -> None:
        try:
            if exc is None:
                stack.close()
            else:  # lets the SDK record the exception on the root span
                stack.__exit__(type(exc), exc, exc.__traceback__)
        except Exception as sdk_exc:
            self._outage.sdk_error("end_trace", sdk_exc)

    def score(
        self,
        *,
        trace_id: str,
        name: str,
        value: float,
        comment: str | None = None,
        data_type: Literal["NUMERIC", "BOOLEAN"] | None = None,
        score_id: str | None = None,
    ) -> None:
        """A score on a trace, e.g. :data:`FEEDBACK_SCORE` 1 for 👍, 0 for 👎; sent in the background.

        With a stable ``score_id`` (e.g. derived from the feedback row) a changed vote replaces the earlier
        score instead of adding a second one."""
        if not self.enabled or self._client is None or not trace_id:
            return
        try:
            self._client.create_score(
                trace_id=trace_id, name=name, value=float(value), comment=comment, data_type=data_type,
                score_id=score_id,
            )
        except Exception as exc:
            self._outage.sdk_error("score", exc)

    def flush(self) -> None:
        """Send everything queued now. Blocks up to the export timeout (longer while scores retry)."""
        if not self.enabled or self._client is None:
            return
        try:
            self._client.flush()
        except Exception as exc:
            self._outage.sdk_error("flush", exc)

    def shutdown(self) -> None:
        """Flush, stop the background threads and close the connections. Idempotent."""
        with self._lifecycle_lock:
            if self._stopped:
                return
            self._stopped = True
        was_enabled, self.enabled = self.enabled, False
        if was_enabled and self._client is not None:
            try:
                self._client.shutdown()
            except Exception as exc:
                self._outage.sdk_error("shutdown", exc)
        self._release_resources()

    async def aflush(self) -> None:
        """:meth:`flush` off the event loop."""
        if self.enabled:
            await asyncio.to_thread(self.flush)

    async def ashutdown(self) -> None:
        """:meth:`shutdown` off the event loop."""
        await asyncio.to_thread(self.shutdown)

    def _release_resources(self) -> None:
        for operation, release in (
            ("provider_shutdown", self._provider.shutdown if self._provider else None),
            ("http_close", self._http.close if self._http else None),
        ):
            if release is not None:
                try:
                    release()
                except Exception as exc:
                    self._outage.sdk_error(operation, exc)
        self._forget_sdk_cache(only_if_ours=True)
        self._client = None

    def _forget_sdk_cache(self, *, only_if_ours: bool) -> None:
        """Drop the SDK's per-public-key cache entry (private SDK state: skipped if its shape changes)."""
        if not self._public_key:
            return
        try:
            from langfuse._client.resource_manager import LangfuseResourceManager

            with LangfuseResourceManager._lock:
                cached = LangfuseResourceManager._instances.get(self._public_key)
                if cached is not None and (not only_if_ours or cached is self._resources):
                    del LangfuseResourceManager._instances[self._public_key]
        except Exception:
            pass
