"""Langfuse tracing: one trace per answer, feedback as scores.

A trace is a root span ``answer`` (input: the question, output: the answer) with a child ``retrieve`` (input:
the query, output: the ranked doc ids and scores) and a child generation ``generate`` (model, messages, output
text, token usage, cost). The user id is pseudonymised before it leaves the process
(:func:`bot.core.identity.hash_user`), the thread is the Langfuse session, and platform, release and
interaction id travel as trace metadata and tags.

Langfuse 5 is OpenTelemetry-based: a background thread batches spans and exports them over OTLP/HTTP to
``{host}/api/public/otel/v1/traces``; another sends scores to ``/api/public/scores``. Without keys the tracer
is inert: no client, no threads, no log line.

Modules, one concept each:

- :mod:`~bot.tracing.tracer` — :class:`Tracer`: start, ``answer_trace``, ``score``, ``flush``, ``shutdown``;
- :mod:`~bot.tracing.handle` — :class:`TraceHandle`: the retrieve/generate children and the finish of a trace;
- :mod:`~bot.tracing.attributes` — trace-level attributes (user, session, tags, metadata) within Langfuse's
  limits;
- :mod:`~bot.tracing.outage` — a Langfuse outage as one warning and one recovery line: the reporting span
  exporter and HTTP transport, the SDK log filter;
- :mod:`~bot.tracing.sdk_private` — the only code touching the SDK's private state (its per-key client cache).

    from bot.tracing import FEEDBACK_SCORE, Tracer
"""

from bot.core.types import FEEDBACK_SCORE
from bot.tracing.handle import TraceHandle
from bot.tracing.tracer import Tracer

__all__ = ["FEEDBACK_SCORE", "TraceHandle", "Tracer"]
