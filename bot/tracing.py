"""Langfuse tracing: one trace per answer, feedback as scores.

A trace is a root span ``answer`` (input: the question, output: the answer) with a child ``retrieve``
(input: the query, output: the ranked doc ids and scores) and a child generation ``generate`` (model, messages,
output text, token usage and cost). The user id is hashed before it leaves the process, the thread is the
Langfuse session, and platform, release and interaction id travel as trace metadata and tags.

Langfuse 5 is OpenTelemetry-based: spans are batched by a background thread and exported over OTLP/HTTP to
``{host}/api/public/otel/v1/traces``; scores go to ``/api/public/scores`` from another background thread. The
:class:`Tracer` owns its own ``TracerProvider`` and exporter, so it neither installs nor depends on the
process-global OpenTelemetry provider or the SDK's env-configured singleton.

Tracing is best effort. Without keys the tracer is inert (no client, no threads, no log line). With keys, a
Langfuse outage never reaches the answer path: SDK errors are caught, and a failing export is reported once
as a warning (and its recovery once as info) instead of one error line per batch. Message text goes to
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
from typing import TYPE_CHECKING, Any, Literal

import httpx

from bot.log import get_logger
from bot.question import Usage
from bot.settings import Settings
from knowledge.passage import Passage

if TYPE_CHECKING:
    from langfuse import Langfuse
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer as OtelTracer

log = get_logger(__name__)

#: Hex characters kept of the user-id hash: 64 bits, ample to tell an organisation's users apart.
USER_HASH_CHARS = 16
#: Score name for 👍 (1) / 👎 (0) feedback.
FEEDBACK_SCORE = "user_feedback"
#: Langfuse rejects longer propagated values (user id, session id, tags, metadata values).
_MAX_PROPAGATED_CHARS = 200
#: The OTLP path Langfuse ingests traces on.
OTLP_TRACES_PATH = "/api/public/otel/v1/traces"


def hash_user(platform: str, user: str) -> str:
    """The pseudonymous user id sent to Langfuse: a truncated sha256 of platform and platform user id."""
    return hashlib.sha256(f"{platform}:{user}".encode()).hexdigest()[:USER_HASH_CHARS]


def _session_id(thread: str) -> str | None:
    """The thread as Langfuse session id; hashed only when Langfuse would reject it (non-ASCII, > 200 chars)."""
    if not thread:
        return None
    if thread.isascii() and len(thread) <= _MAX_PROPAGATED_CHARS:
        return thread
    return "thread-" + hashlib.sha256(thread.encode()).hexdigest()[:32]


def _clip(value: str) -> str:
    return value[:_MAX_PROPAGATED_CHARS]


class _OutageReporter:
    """Turns a stream of export failures into one warning per outage and one info line per recovery."""

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
        """An exception from our own call into the SDK: warned once per operation, then silent."""
        with self._lock:
            first = operation not in self._sdk_errors
            self._sdk_errors.add(operation)
        # The exception's type only: its message could quote trace content.
        if first:
            log.warning("langfuse_tracing_error", operation=operation, error=type(exc).__name__)
        else:
            log.debug("langfuse_tracing_error", operation=operation, error=type(exc).__name__)


def _reporting_span_exporter(inner: SpanExporter, outage: _OutageReporter) -> SpanExporter:
    """Wrap the OTLP exporter so a failing export is reported through ``outage`` and never raises."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class ReportingSpanExporter(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            _suppressed.message = None
            try:
                result = inner.export(spans)
            except Exception as exc:  # the batch thread must survive anything
                outage.failed("traces", type(exc).__name__)
                return SpanExportResult.FAILURE
            if result is SpanExportResult.SUCCESS:
                outage.ok("traces")
            else:
                outage.failed("traces", (_suppressed.message or "export failed")[:200])
            return result

        def shutdown(self) -> None:
            try:
                inner.shutdown()
            except Exception as exc:
                outage.sdk_error("exporter_shutdown", exc)

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            try:
                return inner.force_flush(timeout_millis)
            except Exception:
                return False

    return ReportingSpanExporter()


class _ReportingTransport(httpx.BaseTransport):
    """The transport of the SDK's REST client (scores): reports failures once, passes everything through."""

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


class _SdkOutageLogFilter(logging.Filter):
    """Drops the SDK's per-batch failure lines; :class:`_OutageReporter` reports an outage once instead."""

    #: (module, function) of the log calls that fire once per failed batch or request.
    _PER_FAILURE_CALLS = frozenset(
        {
            ("http", "export"),  # opentelemetry otlp http client: retries, timeouts, refused connections
            ("score_consumer", "upload"),  # langfuse: "Failed to send N scores"
            ("parse_error", "handle_fern_exception"),  # langfuse: HTTP error explanations
        }
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.module, record.funcName) not in self._PER_FAILURE_CALLS:
            return True
        if record.levelno >= logging.ERROR:
            # Status code and reason, never payload: becomes the reason of the one outage warning.
            _suppressed.message = record.getMessage()
        return False


#: The last per-failure SDK log line this thread suppressed (the exporter logs, then returns FAILURE).
_suppressed = threading.local()


_sdk_log_filter_lock = threading.Lock()
_sdk_log_filter: _SdkOutageLogFilter | None = None


def _install_sdk_log_filter() -> None:
    global _sdk_log_filter
    with _sdk_log_filter_lock:
        if _sdk_log_filter is not None:
            return
        _sdk_log_filter = _SdkOutageLogFilter()
        for name in ("langfuse", "opentelemetry.exporter.otlp.proto.http.trace_exporter"):
            logging.getLogger(name).addFilter(_sdk_log_filter)


class TraceHandle:
    """What the answer path records into its trace. Every method is a no-op when tracing is off or broken."""

    def __init__(
        self,
        *,
        client: Langfuse | None = None,
        otel_tracer: OtelTracer | None = None,
        root: Any = None,
        root_span: Span | None = None,
        context: Context | None = None,
        tags: Sequence[str] = (),
        outage: _OutageReporter | None = None,
    ) -> None:
        self._client = client
        self._otel_tracer = otel_tracer
        self._root = root
        self._root_span = root_span
        self._context = context
        self._tags = list(tags)
        self._outage = outage
        self._open = root is not None
        self.trace_id: str | None = getattr(root, "trace_id", None)

    # --- recording -----------------------------------------------------------------------------------
    def retrieval(self, passages: Sequence[Passage], latency_ms: float, query: str) -> None:
        """A ``retrieve`` span that ended now and lasted ``latency_ms``: the query in, ranked hits out."""
        if not self._open:
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
            metadata = {
                "hits": len(hits),
                "top_score": passages[0].score if passages else None,
                "index_version": passages[0].index_version if passages else None,
                "latency_ms": latency_ms,
            }
            self._child(
                LangfuseRetriever,
                "retrieve",
                latency_ms,
                input=query,
                output=hits,
                metadata={k: v for k, v in metadata.items() if v is not None},
            )
        except Exception as exc:
            self._sdk_error("retrieval", exc)

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
        """A ``generate`` generation that ended now: model, messages, text, usage and cost in US dollars.

        ``fallback`` marks an extractive answer (the model was not called or failed); it is kept as a
        generation so the trace shows what the user got, at level WARNING.
        """
        if not self._open:
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
            self._sdk_error("generation", exc)

    def finish(self, answer_text: str, status: str) -> None:
        """The answer as delivered: the trace's output, its status as metadata and a ``status:`` tag."""
        if not self._open:
            return
        try:
            from langfuse import LangfuseOtelSpanAttributes as Attr

            status = str(status)
            self._root.update(
                output=answer_text,
                metadata={"status": status},
                level="ERROR" if status == "error" else None,
            )
            if self._root_span is not None:
                self._root_span.set_attribute(f"{Attr.TRACE_METADATA}.status", json.dumps(status))
                self._root_span.set_attribute(Attr.TRACE_TAGS, [*self._tags, _clip(f"status:{status}")])
        except Exception as exc:
            self._sdk_error("finish", exc)

    # --- internals -----------------------------------------------------------------------------------
    def _child(self, wrapper: type, name: str, latency_ms: float, **fields: Any) -> None:
        """Start a child of the root backdated by ``latency_ms`` and end it now.

        The SDK's ``start_observation`` has no start time, and the pipeline reports a step once it is done, so
        the span is started on the SDK's own tracer (same provider, same instrumentation scope) and wrapped in
        the SDK's observation class, which writes the Langfuse attributes.
        """
        assert self._otel_tracer is not None and self._client is not None
        end_ns = time.time_ns()
        duration_ns = int(latency_ms * 1_000_000) if math.isfinite(latency_ms) and latency_ms > 0 else 0
        start_ns = end_ns - duration_ns
        root_start = getattr(self._root_span, "start_time", None)
        if isinstance(root_start, int):
            start_ns = max(start_ns, root_start)  # a child never starts before its trace
        span = self._otel_tracer.start_span(name, context=self._context, start_time=start_ns)
        try:
            wrapper(otel_span=span, langfuse_client=self._client, **{k: v for k, v in fields.items() if v is not None})
        finally:
            span.end(end_time=end_ns)

    def _fail(self, exc: BaseException) -> None:
        """The answer path raised inside the trace: mark the root as an error (the type only, no message)."""
        if not self._open:
            return
        try:
            self._root.update(level="ERROR", status_message=type(exc).__name__)
        except Exception as sdk_exc:
            self._sdk_error("fail", sdk_exc)

    def _close(self) -> None:
        self._open = False

    def _sdk_error(self, operation: str, exc: BaseException) -> None:
        if self._outage is not None:
            self._outage.sdk_error(operation, exc)


class Tracer:
    """No-op when Langfuse keys are not configured: no client created, nothing logged.

    One instance per process (web or worker); safe to share between asyncio tasks, since the current span
    lives in ``contextvars``. Call :meth:`shutdown` (or :meth:`ashutdown`) when the process stops so the
    last batch is sent.
    """

    def __init__(self, settings: Settings, *, timeout_s: int = 5, flush_interval_s: float | None = None) -> None:
        """``timeout_s`` bounds each export request and its retries; ``flush_interval_s`` (default 5 s for
        spans, 1 s for scores) is how often the background threads send what is queued."""
        self.enabled = False
        self._client: Langfuse | None = None
        self._provider: TracerProvider | None = None
        self._otel_tracer: OtelTracer | None = None
        self._http: httpx.Client | None = None
        self._public_key: str | None = None
        self._resources: Any = None
        self._outage = _OutageReporter()
        self._shutdown_lock = threading.Lock()
        self._is_shut_down = False
        if not settings.langfuse_enabled():
            return
        try:
            self._start(settings, timeout_s=timeout_s, flush_interval_s=flush_interval_s)
            self.enabled = True
        except Exception as exc:
            log.warning("langfuse_init_failed", error=type(exc).__name__, host=settings.langfuse_host)
            self._teardown()

    def _start(self, settings: Settings, *, timeout_s: int, flush_interval_s: float | None) -> None:
        from langfuse import Langfuse, LangfuseOtelSpanAttributes
        from langfuse import __version__ as langfuse_version
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        try:
            from langfuse._client.constants import LANGFUSE_TRACER_NAME
        except ImportError:  # pragma: no cover - moved in a future SDK
            LANGFUSE_TRACER_NAME = "langfuse-sdk"

        public_key = settings.langfuse_public_key or ""
        secret_key = settings.langfuse_secret_key or ""
        host = settings.langfuse_host.rstrip("/")
        _install_sdk_log_filter()

        # Our own provider: the SDK would otherwise register a process-global one on first use, and a second
        # Tracer (another host, a test) would then share it and export everything twice.
        self._provider = TracerProvider(
            resource=Resource.create(
                {"service.name": "deskmate", LangfuseOtelSpanAttributes.ENVIRONMENT: settings.environment}
            )
        )
        # The exporter the SDK would build (same endpoint and headers), wrapped to report failures once.
        basic = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode("ascii")
        exporter = OTLPSpanExporter(
            endpoint=f"{host}{OTLP_TRACES_PATH}",
            headers={
                "Authorization": f"Basic {basic}",
                "x-langfuse-sdk-name": "python",
                "x-langfuse-sdk-version": langfuse_version,
                "x-langfuse-public-key": public_key,
                "x-langfuse-ingestion-version": "4",
            },
            timeout=timeout_s,
            compression=Compression.Gzip,
        )
        self._http = httpx.Client(timeout=timeout_s, transport=_ReportingTransport(self._outage))
        self._public_key = public_key
        # The SDK caches its background machinery per public key for the whole process; a cached entry
        # would carry another host and provider, so this tracer always gets a fresh one.
        self._forget_sdk_resources(only_if_ours=False)
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
            span_exporter=_reporting_span_exporter(exporter, self._outage),
        )
        self._resources = getattr(self._client, "_resources", None)
        if getattr(self._resources, "tracer_provider", self._provider) is not self._provider:
            raise RuntimeError("the Langfuse SDK did not bind to this tracer's provider")
        log.info("langfuse_tracing_enabled", host=host, environment=settings.environment)
        # Same name, version and attributes as the SDK's tracer, so the provider hands back that very tracer.
        self._otel_tracer = self._provider.get_tracer(
            LANGFUSE_TRACER_NAME, langfuse_version, attributes={"public_key": public_key}
        )

    # --- tracing -------------------------------------------------------------------------------------
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
        """One trace for one answer; the root span ``answer`` lasts as long as the ``with`` block.

        Exceptions from the block propagate unchanged (the root is marked ERROR with the exception's type);
        exceptions from tracing never do. Usable in async code: the active span is per task.
        """
        stack = ExitStack()
        handle = self._open_trace(
            stack,
            interaction_id=interaction_id,
            question=question,
            user=user,
            thread=thread,
            platform=str(platform),
            release=release,
        )
        try:
            yield handle
        except BaseException as exc:
            handle._fail(exc)
            handle._close()
            self._close_trace(stack, exc)
            raise
        handle._close()
        self._close_trace(stack, None)

    def _open_trace(
        self,
        stack: ExitStack,
        *,
        interaction_id: int | None,
        question: str,
        user: str,
        thread: str,
        platform: str,
        release: str | None,
    ) -> TraceHandle:
        if not self.enabled or self._client is None:
            return TraceHandle()
        try:
            from langfuse import propagate_attributes
            from opentelemetry import context as otel_context
            from opentelemetry import trace as otel_trace

            tags = [_clip(f"platform:{platform}")]
            if release:
                tags.append(_clip(f"release:{release}"))
            metadata = {"interaction_id": interaction_id, "platform": platform, "release": release}
            # Start from an empty context: an answer is always its own trace, even inside another span, and
            # inherits no trace attributes propagated by an enclosing one.
            token = otel_context.attach(otel_context.Context())
            stack.callback(_detach_quietly, token)
            stack.enter_context(
                propagate_attributes(
                    user_id=hash_user(platform, user) if user else None,
                    session_id=_session_id(thread),
                    metadata={k: _clip(v) if isinstance(v, str) else v for k, v in metadata.items() if v is not None},
                    version=_clip(release) if release else None,
                    tags=tags,
                    trace_name="answer",
                )
            )
            root = stack.enter_context(
                self._client.start_as_current_observation(name="answer", as_type="span", input=question)
            )
            return TraceHandle(
                client=self._client,
                otel_tracer=self._otel_tracer,
                root=root,
                root_span=otel_trace.get_current_span(),
                context=otel_context.get_current(),
                tags=tags,
                outage=self._outage,
            )
        except Exception as exc:
            self._outage.sdk_error("answer_trace", exc)
            self._close_trace(stack, None)
            return TraceHandle()

    def _close_trace(self, stack: ExitStack, exc: BaseException | None) -> None:
        try:
            if exc is None:
                stack.close()
            else:
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
    ) -> None:
        """A score on a trace, e.g. ``FEEDBACK_SCORE`` 1.0 for 👍 and 0.0 for 👎; queued and sent in the background."""
        if not self.enabled or self._client is None or not trace_id:
            return
        try:
            self._client.create_score(
                trace_id=trace_id, name=name, value=float(value), comment=comment, data_type=data_type
            )
        except Exception as exc:
            self._outage.sdk_error("score", exc)

    # --- lifecycle -----------------------------------------------------------------------------------
    def flush(self) -> None:
        """Send everything queued now. Blocks up to the export timeout (and the scores' retries)."""
        if not self.enabled or self._client is None:
            return
        try:
            self._client.flush()
        except Exception as exc:
            self._outage.sdk_error("flush", exc)

    def shutdown(self) -> None:
        """Flush, stop the background threads and release the connection pools. Idempotent."""
        with self._shutdown_lock:
            if self._is_shut_down:
                return
            self._is_shut_down = True
        was_enabled = self.enabled
        self.enabled = False
        if was_enabled and self._client is not None:
            try:
                self._client.shutdown()
            except Exception as exc:
                self._outage.sdk_error("shutdown", exc)
        self._teardown()

    async def aflush(self) -> None:
        """:meth:`flush` off the event loop."""
        if self.enabled:
            await asyncio.to_thread(self.flush)

    async def ashutdown(self) -> None:
        """:meth:`shutdown` off the event loop."""
        await asyncio.to_thread(self.shutdown)

    def _teardown(self) -> None:
        if self._provider is not None:
            try:
                self._provider.shutdown()
            except Exception as exc:
                self._outage.sdk_error("provider_shutdown", exc)
        if self._http is not None:
            try:
                self._http.close()
            except Exception as exc:
                self._outage.sdk_error("http_close", exc)
        self._forget_sdk_resources(only_if_ours=True)
        self._client = None

    def _forget_sdk_resources(self, *, only_if_ours: bool) -> None:
        """Drop the SDK's per-public-key cache entry (private SDK state; skipped if the SDK changes shape)."""
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


def _detach_quietly(token: Any) -> None:
    from opentelemetry import context as otel_context

    try:
        otel_context.detach(token)
    except Exception:
        pass
