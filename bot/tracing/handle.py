"""TraceHandle: what the answer path records into its one trace, once each step is done.

A :meth:`~bot.tracing.Tracer.answer_trace` block yields a handle; the pipeline reports each step after it
finished, with its latency, and the handle backdates the child span to fit::

    with tracer.answer_trace(interaction_id=42, question=q, user=u, thread=t, platform="slack",
                             release="r7") as trace:
        trace.rewrite(model=m, input_messages=msgs, output_text=query, usage=u, cost_usd=c,
                      latency_ms=300.0, error=None)                      # child "rewrite" (a generation)
        trace.retrieval(passages, latency_ms=20.0, query=query)        # child "retrieve" (a retriever)
        trace.generation(model, messages, text, usage, cost_usd, latency_ms=900.0, fallback=False)
        trace.finish(text, "answered")                                  # trace output, status tag
    trace.trace_id  # 32 hex chars, or None when tracing is off

Every method is a no-op when tracing is off or the trace could not be opened, and never raises: an SDK
error is reported once through the :class:`~bot.tracing.outage.OutageReporter` instead.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace

from bot.core.types import Usage
from bot.tracing.attributes import status_tag
from bot.tracing.outage import OutageReporter
from knowledge.passage import Passage

# Importing langfuse has side effects (a handler on the httpx logger), so this module imports it only inside
# the code that runs once tracing is on (hence `noqa: PLC0415`), and here for the type checker.
if TYPE_CHECKING:
    from langfuse import Langfuse, LangfuseSpan


@dataclass
class LiveTrace:
    """One open trace: the SDK objects a handle writes through."""

    client: Langfuse
    otel_tracer: otel_trace.Tracer
    root: LangfuseSpan
    root_span: otel_trace.Span
    context: otel_context.Context  # root as current span, trace attributes propagated
    tags: list[str]
    outage: OutageReporter


class TraceHandle:
    """What the answer path records into its trace. Every method is a no-op when tracing is off or broken."""

    def __init__(self, live: LiveTrace | None = None) -> None:
        self._live = live
        self.trace_id: str | None = live.root.trace_id if live else None

    def retrieval(self, passages: Sequence[Passage], latency_ms: float, query: str, *,
                  query_method: str | None = None, query_reason: str | None = None) -> None:
        """A ``retrieve`` span that ended now and lasted ``latency_ms``: the query searched in (``query_method``:
        the message as written, the offline query or the rewrite model's; ``query_reason``: why), ranked hits
        out."""
        if self._live is None:
            return
        try:
            from langfuse import LangfuseRetriever  # noqa: PLC0415 - lazy, see top

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
            if query_method is not None:
                metadata |= {"query_method": query_method, "query_reason": query_reason or ""}
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
            from langfuse import LangfuseGeneration  # noqa: PLC0415 - lazy, see top

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

    def rewrite(
        self,
        *,
        model: str,
        input_messages: Any,
        output_text: str,
        usage: Usage,
        cost_usd: float,
        latency_ms: float,
        error: str | None = None,
    ) -> None:
        """A ``rewrite`` generation that ended now: the query-rewrite call, its messages in, the standalone query
        out, with usage and cost. A failed call (``error``) is kept at level WARNING: the offline query was
        searched instead."""
        if self._live is None:
            return
        try:
            from langfuse import LangfuseGeneration  # noqa: PLC0415 - lazy, see top

            self._child(
                LangfuseGeneration,
                "rewrite",
                latency_ms,
                input=input_messages,
                output=output_text,
                metadata={"latency_ms": latency_ms, **({"error": error} if error else {})},
                model=model,
                usage_details={
                    "input": usage.input_tokens,
                    "output": usage.output_tokens,
                    "cache_read_input_tokens": usage.cache_read_tokens,
                    "cache_creation_input_tokens": usage.cache_write_tokens,
                },
                cost_details={"total": float(cost_usd)},
                level="WARNING" if error else None,
                status_message=f"rewrite failed ({error}): the offline query was searched" if error else None,
            )
        except Exception as exc:
            self._live.outage.sdk_error("rewrite", exc)

    def finish(self, answer_text: str, status: str) -> None:
        """The answer as delivered: the trace's output, its status as trace metadata and a ``status:`` tag."""
        if self._live is None:
            return
        try:
            from langfuse import LangfuseOtelSpanAttributes as Attr  # noqa: PLC0415 - lazy, see top

            live, status = self._live, str(status)
            level: Literal["ERROR"] | None = "ERROR" if status == "error" else None
            live.root.update(output=answer_text, metadata={"status": status}, level=level)
            live.root_span.set_attribute(f"{Attr.TRACE_METADATA}.status", json.dumps(status))
            live.root_span.set_attribute(Attr.TRACE_TAGS, [*live.tags, status_tag(status)])
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
