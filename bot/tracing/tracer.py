"""Tracer: the process's Langfuse connection; one trace per answer, feedback as scores.

One per process (web or worker), built from the settings and shared by all asyncio tasks::

    tracer = Tracer(settings)                     # inert without Langfuse keys: no client, no threads
    with tracer.answer_trace(interaction_id=42, question=q, user=u, thread=t, platform="slack",
                             release="r7") as trace:
        ...                                       # a TraceHandle: retrieval, generation, finish
    tracer.score(trace_id=trace.trace_id, name=FEEDBACK_SCORE, value=1)   # a 👍, sent in the background
    tracer.shutdown()                             # or ``await tracer.ashutdown()``: the last batch goes out

A tracer owns its ``TracerProvider``, OTLP exporter and HTTP client, so it neither installs nor depends on the
process-global OpenTelemetry provider, and two tracers never export each other's spans. The user id is the
kernel's pseudonym, ``hash_user(user, settings.user_hash_salt)``, the same one the database stores.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Literal

import httpx
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from bot.core.identity import hash_user
from bot.core.log import get_logger
from bot.core.settings import Settings
from bot.tracing.attributes import TRACE_NAME, TraceAttributes
from bot.tracing.handle import LiveTrace, TraceHandle
from bot.tracing.outage import (
    OutageReporter,
    ReportingSpanExporter,
    ReportingTransport,
    install_sdk_log_filter,
)
from bot.tracing.sdk_private import bound_tracer_provider, forget_client, new_unshared_client, sdk_tracer_name

# Importing langfuse has side effects (a handler on the httpx logger), so this module imports it only inside
# the code that runs once tracing is on (hence `noqa: PLC0415`), and here for the type checker.
if TYPE_CHECKING:
    from langfuse import Langfuse

log = get_logger(__name__)

OTLP_TRACES_PATH = "/api/public/otel/v1/traces"


class _SwitchedOff(Exception):
    """Keys are set, but the operator turned the SDK off through its own environment variable."""


class Tracer:
    """No-op when Langfuse keys are not configured: no client created, nothing logged.

    One per process (web or worker), shared by all asyncio tasks: the active span lives in ``contextvars``,
    so concurrent answers never mix. Sending happens on background threads; call :meth:`shutdown` (or
    :meth:`ashutdown` from async code) when the process stops so the last batch goes out.

    Tracing is best effort. With keys, a Langfuse outage never reaches the answer path: SDK errors are caught,
    and a failing export is reported once as a warning (its recovery once as info) instead of the SDK's error
    line per batch. Message text goes to Langfuse, where it is the trace's content, and never to logs.
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
        self._user_hash_salt = settings.user_hash_salt
        self._outage = OutageReporter()
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
        from langfuse import LangfuseOtelSpanAttributes  # noqa: PLC0415 - lazy, see top
        from langfuse import __version__ as sdk_version  # noqa: PLC0415 - lazy, see top

        public_key, secret_key = settings.langfuse_public_key or "", settings.langfuse_secret_key or ""
        host = settings.langfuse_host.rstrip("/")
        install_sdk_log_filter()
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
        self._http = httpx.Client(timeout=timeout_s, transport=ReportingTransport(self._outage))
        # The SDK caches its background machinery per public key for the whole process; a cached bundle would
        # carry another tracer's host and provider, so this tracer starts a fresh one (see sdk_private).
        self._client = new_unshared_client(
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
            span_exporter=ReportingSpanExporter(exporter, self._outage),
        )
        bound_provider = bound_tracer_provider(self._client, self._provider)
        if bound_provider is None:  # LANGFUSE_TRACING_ENABLED=false: the SDK sends nothing, scores included
            raise _SwitchedOff("LANGFUSE_TRACING_ENABLED")
        if bound_provider is not self._provider:
            raise RuntimeError("the Langfuse SDK did not bind to this tracer's provider")
        # Same name, version and attributes as the SDK's tracer: the provider hands back that very tracer.
        self._otel_tracer = self._provider.get_tracer(
            sdk_tracer_name(), sdk_version, attributes={"public_key": public_key}
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
            from langfuse import propagate_attributes  # noqa: PLC0415 - lazy, see top

            attributes = TraceAttributes.of_answer(
                interaction_id=interaction_id,
                user_id=hash_user(user, self._user_hash_salt),
                thread=thread,
                platform=platform,
                release=release,
            )
            # An empty context: an answer is always its own trace, even inside another span, and inherits
            # no trace attributes from an enclosing one.
            stack.callback(otel_context.detach, otel_context.attach(otel_context.Context()))
            stack.enter_context(propagate_attributes(**attributes.propagated()))
            root = stack.enter_context(
                self._client.start_as_current_observation(name=TRACE_NAME, as_type="span", input=question)
            )
            root_span = otel_trace.get_current_span()
            if not root_span.is_recording():  # the SDK's tracer is off (LANGFUSE_TRACING_ENABLED=false, ...)
                return TraceHandle()
            live = LiveTrace(
                client=self._client,
                otel_tracer=self._otel_tracer,
                root=root,
                root_span=root_span,
                context=otel_context.get_current(),
                tags=attributes.tags,
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
        if self._client is not None:
            forget_client(self._client)
        self._client = None
