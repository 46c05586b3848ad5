"""The answer pipeline: one pending interaction in, one recorded, traced and delivered answer out.

Steps, in order: begin the attempt (an already-final interaction is not answered twice) → playbooks
(kill-switch; the release — the active one, or a running canary's candidate: :func:`playbooks.canary.route_release`;
channel policy) → the search query (:func:`search_query`: the thread's history and the new message made into one
standalone query) → retrieve → compose (Claude or the extractive fallback) →
record → trace → deliver → after-answer hooks. Each step's latency goes into the answer and the interaction.

Streaming (:mod:`bot.delivery`, "Streaming"): when the platform's deliverer can stream
(:class:`~bot.delivery.StreamingDeliverer`), the answer is written live — a status while searching and writing,
then the model's text as it comes (:class:`LiveAnswer`) — and the first delivery attempt is the stream's
``finish``. The stream's refs are recorded as soon as something is posted (``Interaction.delivery["stream"]``),
so a job retried after a crash mid-stream replaces that message instead of posting a second answer. A platform
failing midway ends the streaming, never the answer: it is delivered the placeholder-then-update way, over the
half-streamed message. The kill-switch is read again while streaming (at most every
:data:`KILL_SWITCH_CHECK_S`): set to off, it stops the model and the stream shows the maintenance reply.

Delivery is its own durable step. Recording the answer makes its delivery *pending* (in the same commit); the
answer job then makes the first attempt itself (no extra hop when the platform is fine). A failed attempt is
classified by the deliverer (:class:`~bot.delivery.DeliveryFailed`): permanent → recorded as failed; retryable
→ handed over to the ``deliver`` job (:mod:`bot.queue`), which :meth:`AnswerPipeline.deliver` runs again with
exponential backoff (``Retry-After`` honoured) until ``DESKMATE_DELIVERY_DEADLINE_S`` after the answer, then
records it as failed. The failure notice of a question that could not be answered goes the same way.

:class:`AnswerPipeline` depends on small Protocols (:class:`Searcher`, :class:`Composer`, :class:`Tracing`),
so tests can drive it with in-memory parts; the worker builds it from its :class:`~bot.runtime.Runtime`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from bot.core.clock import utcnow
from bot.core.log import get_logger, redact
from bot.core.settings import Settings
from bot.answering import maintenance_answer, not_found_answer
from bot.core.types import Answer, Platform, Question, Source, Status, Usage
from bot.delivery import STREAM_REFS, AnswerStream, Deliverer, DeliveryFailed
from bot.llm import GenerationConfig, StreamStopped, TextSink, Turn
from bot.rewrite import QueryRewriter, Rewrite
from bot.status_text import FAILURE_NOTICE, SEARCHING, WRITING, Progress
from feedback.db import Database
from feedback.interactions import DeliveryState, Exchange, InteractionStore
from feedback.models import Interaction, Release
from knowledge.index import IndexNotFound
from knowledge.passage import Passage
from knowledge.language import written_in
from knowledge.query import offline_query
from knowledge.retrieval import FusionConfig, SearchFilter, relevant_enough
from playbooks.canary import Route
from playbooks.killswitch import GLOBAL_SCOPE, Mode, channel_scope, is_expired, list_switches
from playbooks.state import AnswerState, PlaybookState
from sqlmodel.ext.asyncio.session import AsyncSession

log = get_logger(__name__)

#: While an answer streams, the kill-switch is read again at most this often (one small query).
KILL_SWITCH_CHECK_S = 1.0


class Searcher(Protocol):
    async def asearch(self, query: str, **kwargs: Any) -> list[Passage]: ...

    async def avocabulary(self, kb: str, version: int | None = None) -> Mapping[str, int]:
        """The index's terms (BM25 stems) and how many chunks contain each, for the offline query
        (:func:`knowledge.query.offline_query`)."""
        ...


class Composer(Protocol):
    async def compose(self, question: str, history: list[Turn], passages: list[Passage],
                      config: GenerationConfig, *, allow_llm: bool = True) -> Answer:
        """(An implementation that can stream also takes ``sink: TextSink | None``: see :class:`LiveAnswer`.)"""
        ...


class TraceSpan(Protocol):
    """What the pipeline writes into one answer's trace."""

    @property
    def trace_id(self) -> str | None: ...

    def retrieval(self, passages: Sequence[Passage], latency_ms: float, query: str, *,
                  query_method: str | None = None, query_reason: str | None = None) -> None: ...

    def rewrite(self, *, model: str, input_messages: Any, output_text: str, usage: Usage, cost_usd: float,
                latency_ms: float, error: str | None) -> None: ...

    def generation(self, *, model: str, input_messages: Any, output_text: str, usage: Usage, cost_usd: float,
                   latency_ms: float, fallback: bool) -> None: ...

    def finish(self, answer_text: str, status: str) -> None: ...


class Tracing(Protocol):
    def answer_trace(self, *, interaction_id: int | None, question: str, user: str, thread: str, platform: str,
                     release: str | None) -> AbstractContextManager[TraceSpan]: ...


class DeliveryScheduler(Protocol):
    """Where a failed first delivery attempt is handed over to be retried (the worker: :class:`bot.queue.DeliveryQueue`)."""

    async def schedule(self, interaction_id: int, idempotency_key: str, defer_s: float) -> bool: ...


#: Runs after every recorded answer (budget guard, metrics); a failing hook never fails the answer.
AfterAnswerHook = Callable[[int, Answer], Awaitable[None]]


class CanaryHooks(Protocol):
    """After an answer routed under a canary (:class:`playbooks.canary.CanaryGuard`): a shadow answer to start,
    the canary's decision when due."""

    async def after_answer(self, route: Route, interaction_id: int, answer: Answer) -> None: ...


@dataclass(frozen=True)
class DeliveryOutcome:
    """What one delivery attempt came to: ``state`` None = nothing to deliver (missing, or no longer pending);
    ``PENDING`` with ``retry_in_s`` = failed, try again then; ``DELIVERED``; ``FAILED`` = given up."""

    state: DeliveryState | None
    retry_in_s: float | None = None
    error: str | None = None


def needs_delivery(platform: Platform) -> bool:
    """The local chat has nothing to send (its page reads the recorded interaction); every chat platform does."""
    return platform is not Platform.LOCAL


def recorded_answer(row: Interaction) -> Answer:
    """The answer as recorded, for a delivery attempt made after the answer job (the ``deliver`` job)."""
    return Answer(interaction_id=row.id, text=row.answer or "", status=Status(row.status),
                  sources=[Source.model_validate(s) for s in row.sources or []], fallback=row.fallback,
                  fallback_reason=row.fallback_reason if row.fallback else None, release=row.release,
                  model=row.model, latency_ms=dict(row.latency_ms or {}))


def retry_delay(settings: Settings, failures: int, retry_after_s: float | None) -> float:
    """How long to wait before the next delivery attempt after ``failures`` failed ones: the platform's
    ``Retry-After`` when it sent one (at most ``delivery_retry_after_max_s``), else exponential backoff from
    ``delivery_backoff_s`` (at most ``delivery_backoff_max_s``); never less than ``delivery_backoff_s``, plus up to
    10 % jitter so that deliveries failed together do not retry together."""
    if retry_after_s is not None:
        delay = min(retry_after_s, settings.delivery_retry_after_max_s)
    else:
        delay = min(settings.delivery_backoff_max_s, settings.delivery_backoff_s * 2 ** max(0, failures - 1))
    return max(delay, settings.delivery_backoff_s) * (1.0 + 0.1 * random.random())


def generation_config(release: Release, timeout_s: float) -> GenerationConfig:
    return GenerationConfig(model=release.model, max_tokens=release.max_tokens, temperature=release.temperature,
                            prompt_template=release.prompt_template, prompt_version=release.prompt_version,
                            timeout_s=timeout_s)


def history_turns(exchanges: list[Exchange]) -> list[Turn]:
    turns: list[Turn] = []
    for exchange in exchanges:
        turns.append(Turn(role="user", text=exchange.question))
        if exchange.answer:
            turns.append(Turn(role="assistant", text=exchange.answer))
    return turns


@dataclass(frozen=True)
class PlannedQuery:
    """What is searched for one message, how it was made (``method``: ``message`` — the message as written;
    ``offline`` — :func:`knowledge.query.offline_query`; ``llm`` — the rewrite model), and why."""

    text: str
    method: str
    reason: str = ""
    rewrite: Rewrite | None = None  # the model call, when one was made (successful or not)
    alternative: str | None = None  # also searched, rankings merged (knowledge.query: a thread's self-contained message)


async def search_query(
    searcher: Searcher, rewriter: QueryRewriter | None, settings: Settings, text: str, history: list[Turn],
    release: Release, *, allow_llm: bool, trace: TraceSpan | None = None,
) -> PlannedQuery:
    """The query to search for ``text`` after ``history``, as ``release.query_rewrite`` says:

    - ``off``: the message as written (as before query rewriting existed);
    - ``offline``: the history-aware query of :mod:`knowledge.query` (no model);
    - ``llm``: the rewrite model for every message; ``auto``: only when it can change something — the thread
      has history, or the message may not be in the documents' language (``DESKMATE_DOCUMENTS_LANGUAGE``).
      Without the model (no key, retrieval-only mode, the circuit open, the call failing) the offline query.
    """
    mode = release.query_rewrite
    if mode == "off":
        return PlannedQuery(text, "message", "query rewriting off")
    offline = offline_query(text, history, vocabulary=await _vocabulary(searcher, release))
    planned = PlannedQuery(offline.text, "offline", offline.reason, alternative=offline.alternative)
    if mode == "offline":
        return planned
    language = settings.documents_language
    if mode == "auto" and not history and written_in(text, language):
        return planned  # nothing to resolve, nothing to translate: no model call
    if rewriter is None or not rewriter.available:
        return dataclasses.replace(planned, reason=f"{planned.reason} (no rewrite model: no API key)")
    if not allow_llm:
        return dataclasses.replace(planned, reason=f"{planned.reason} (retrieval-only mode)")
    rewrite = await rewriter.rewrite(text, history, model=release.rewrite_model or settings.query_rewrite_model,
                                     language=language)
    if rewrite.called and trace is not None:
        trace.rewrite(model=rewrite.model, input_messages=rewrite.messages, output_text=rewrite.query or "",
                      usage=rewrite.usage, cost_usd=rewrite.cost_usd, latency_ms=rewrite.latency_ms,
                      error=rewrite.error)
    if rewrite.query is None:
        log.info("pipeline.rewrite_fallback", reason=rewrite.error)
        return dataclasses.replace(planned, reason=f"{planned.reason} (rewrite model: {rewrite.error})",
                                   rewrite=rewrite)
    return PlannedQuery(rewrite.query, "llm", f"rewritten by {rewrite.model}", rewrite=rewrite)


async def _vocabulary(searcher: Searcher, release: Release) -> Mapping[str, int] | None:
    try:
        return await searcher.avocabulary(release.kb, release.index_version)
    except IndexNotFound:
        return None  # the search reports it


def _plus(a: Usage, b: Usage) -> Usage:
    return Usage(input_tokens=a.input_tokens + b.input_tokens, output_tokens=a.output_tokens + b.output_tokens,
                 cache_read_tokens=a.cache_read_tokens + b.cache_read_tokens,
                 cache_write_tokens=a.cache_write_tokens + b.cache_write_tokens)


async def compose_for_release(
    searcher: Searcher, composer: Composer, settings: Settings, text: str, history: list[Turn], release: Release,
    search_filter: SearchFilter, *, allow_llm: bool, latency: dict[str, float], trace: TraceSpan | None = None,
    rewriter: QueryRewriter | None = None, sink: TextSink | None = None,
) -> tuple[Answer, list[Passage]]:
    """Make the search query, retrieve and compose one answer as ``release`` would: the core the worker and the
    evaluation share. A rewrite model call's tokens and cost are added to the answer's, its latency is
    ``latency["rewrite"]``. With a ``sink`` the model's answer is streamed into it (:class:`LiveAnswer`)."""
    tq = time.perf_counter()
    query = await search_query(searcher, rewriter, settings, text, history, release, allow_llm=allow_llm,
                               trace=trace)
    latency["query"] = round((time.perf_counter() - tq) * 1000, 1)
    if query.rewrite is not None and query.rewrite.called:
        latency["rewrite"] = query.rewrite.latency_ms
    t0 = time.perf_counter()
    try:
        passages = await searcher.asearch(
            query.text, kb=release.kb, version=release.index_version, k=release.retrieval_k,
            candidates=release.retrieval_candidates, search_filter=search_filter,
            fusion=FusionConfig.from_dict(release.fusion), alternative=query.alternative,
        )
    except IndexNotFound as exc:
        log.error("pipeline.index_missing", error=str(exc))
        passages = []
    latency["retrieve"] = round((time.perf_counter() - t0) * 1000, 1)
    if trace is not None:
        trace.retrieval(passages, latency["retrieve"], query.text, query_method=query.method,
                        query_reason=query.reason)
    t1 = time.perf_counter()
    if not passages or not relevant_enough(passages, level=release.not_found_level, min_score=release.min_score):
        answer = not_found_answer(passages, question=text)  # nothing relevant: no model call, the closest sources shown
    else:
        config = generation_config(release, settings.llm_timeout_s)
        if sink is not None:
            answer = await composer.compose(text, history, passages, config, allow_llm=allow_llm,
                                            sink=sink)  # type: ignore[call-arg]
        else:
            answer = await composer.compose(text, history, passages, config, allow_llm=allow_llm)
    latency["generate"] = round((time.perf_counter() - t1) * 1000, 1)
    if answer.llm_latency_ms:
        latency["llm"] = round(answer.llm_latency_ms, 1)  # the model's part of "generate"
    if answer.llm_slot_wait_ms:
        latency["llm_slot"] = answer.llm_slot_wait_ms  # waited for another answer's model call to end
    if trace is not None and (answer.model or answer.usage.input_tokens):
        trace.generation(model=answer.model or release.model, input_messages=text, output_text=answer.text,
                         usage=answer.usage, cost_usd=answer.cost_usd,
                         latency_ms=answer.llm_latency_ms or latency["generate"], fallback=answer.fallback)
    if query.rewrite is not None and query.rewrite.called:
        answer.usage = _plus(answer.usage, query.rewrite.usage)
        answer.cost_usd += query.rewrite.cost_usd
    answer.search_query = query.text
    answer.release = release.name
    return answer, passages


class SwitchWatch:
    """The kill-switch as the answers being streamed see it: every switch read at most once per
    :data:`KILL_SWITCH_CHECK_S` for the whole process (one small query, however many answers stream)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._read_at = float("-inf")
        self._rows: list[Any] = []
        self._lock = asyncio.Lock()

    async def mode(self, platform: str, channel: str) -> tuple[Mode, str | None]:
        """The effective mode of ``channel`` (as :func:`playbooks.killswitch.effective_mode`) and its reason."""
        if time.monotonic() - self._read_at >= KILL_SWITCH_CHECK_S:
            async with self._lock:
                if time.monotonic() - self._read_at >= KILL_SWITCH_CHECK_S:
                    async with self.db.asession() as session:
                        self._rows = [(r.scope, r.mode, r.reason, is_expired(r)) for r in await list_switches(session)]
                    self._read_at = time.monotonic()
        scopes = {GLOBAL_SCOPE, channel_scope(platform, channel)}
        worst: tuple[Mode, str | None] = (Mode.ON, None)
        for scope, value, reason, expired in self._rows:
            if scope in scopes and not expired and Mode(value).severity > worst[0].severity:
                worst = (Mode(value), reason)
        return worst


class LiveAnswer:
    """The pipeline's side of one streamed answer (a :class:`~bot.llm.TextSink` over an
    :class:`~bot.delivery.AnswerStream`): hands it the status and the model's text, records its refs the moment
    something is posted, reads the kill-switch again now and then, and gives up streaming — never the answer —
    when the platform fails (``broken``: the answer is then delivered without the stream)."""

    def __init__(self, pipeline: AnswerPipeline, interaction_id: int, question: Question,
                 stream: AnswerStream) -> None:
        self.pipeline = pipeline
        self.interaction_id = interaction_id
        self.question = question
        self.stream = stream
        self.broken = False
        self.recorded: dict[str, Any] = {}
        self.switch_reason: str | None = None

    @property
    def refs(self) -> dict[str, Any]:
        return dict(self.stream.refs or {})

    async def _call(self, what: str, step: Callable[[], Awaitable[None]]) -> None:
        if self.broken:
            return
        try:
            await step()
        except DeliveryFailed as exc:
            self.broken = True
            log.warning("pipeline.stream_failed", step=what, error=exc.error, retryable=exc.retryable)
        except Exception as exc:  # noqa: BLE001 - the stream is given up, the answer is not
            self.broken = True
            log.exception("pipeline.stream_error", step=what, error=repr(exc)[:300])
        await self._record()

    async def _record(self) -> None:
        try:
            refs = self.refs
        except Exception:  # noqa: BLE001
            return
        if refs and refs != self.recorded:
            self.recorded = refs
            await self.pipeline.interactions.record_stream(self.interaction_id, refs)

    async def status(self, progress: Progress) -> None:
        await self._call("status", lambda: self.stream.status(progress.text))

    async def writing(self) -> None:
        await self.status(WRITING)

    async def text(self, delta: str) -> None:
        await self._call("append", lambda: self.stream.append(delta))  # the text first: it is what people wait for
        await self._check_switch()

    async def _check_switch(self) -> None:
        mode, reason = await self.pipeline.switches.mode(self.question.platform.value, self.question.channel)
        if mode == Mode.OFF:
            self.switch_reason = reason
            log.info("pipeline.stream_stopped", reason="kill-switch")
            raise StreamStopped("kill-switch set to off while streaming")


class AnswerPipeline:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        interactions: InteractionStore,
        searcher: Searcher,
        composer: Composer,
        tracing: Tracing,
        deliverers: Mapping[Platform, Deliverer],
        after_answer: Sequence[AfterAnswerHook] = (),
        deliveries: DeliveryScheduler | None = None,
        rewriter: QueryRewriter | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.interactions = interactions
        self.searcher = searcher
        self.composer = composer
        self.tracing = tracing
        self.deliverers = deliverers
        self.after_answer = after_answer
        #: where failed first attempts are handed over; without one, the sweeper finds them (bot.queue)
        self.deliveries = deliveries
        #: the query rewrite model; without one, every follow-up is searched with the offline query
        self.rewriter = rewriter
        #: the kill-switch as streamed answers re-read it
        self.switches = SwitchWatch(db)
        #: after answers routed under a canary (the worker sets it: playbooks.canary.CanaryGuard)
        self.canary: CanaryHooks | None = None
        #: switches, release, canary and channel policies as answers start (re-read when the database says they
        #: changed)
        self.state = PlaybookState(settings)

    async def run(self, interaction_id: int) -> Answer | None:
        """Answer one interaction. Returns None when it is missing or already final (a redelivered job)."""
        started = time.perf_counter()
        pairs = max(1, self.settings.history_turns // 2) if self.settings.history_turns > 0 else 0

        async def playbook_state(session: AsyncSession, row: Interaction) -> AnswerState:
            return await self.state.read(session, Question.model_validate(row.question_payload),
                                         interaction_id=row.id)

        # one transaction: the attempt counted, the thread's history, switches + release + policy
        begun = await self.interactions.start_answer(interaction_id, pairs=pairs, also=playbook_state)
        if begun is None:
            log.info("pipeline.skipped", interaction_id=interaction_id, reason="missing or already final")
            await self._resume_delivery(interaction_id)
            return None
        row, state = begun.row, begun.extra
        question = Question.model_validate(row.question_payload)
        mode, release, policy, route = state.mode, state.release, state.policy, state.route
        if route.canary_id is not None and not policy.enabled:
            route = Route(release)  # the channel is off: the maintenance reply is no arm's doing
        if route.canary_id is not None and route.arm is not None:
            # before answering, so that an answer that ends in an error counts against its arm too
            await self.interactions.set_arm(interaction_id, route.canary_id, route.arm, release.name)
        structlog.contextvars.bind_contextvars(interaction_id=interaction_id, release=release.name)
        log.info("pipeline.start", platform=question.platform.value, mode=mode.value, question=redact(question.text))

        latency: dict[str, float] = {"start": round((time.perf_counter() - started) * 1000, 1)}
        passages: list[Passage] = []
        live: LiveAnswer | None = None
        trace_id: str | None = None
        switch_reason = state.switch_reason
        if mode == Mode.OFF or not policy.enabled:
            answer = maintenance_answer(self.settings.maintenance_message, question.text, release=release.name)
            self._replace_earlier_stream(question, row)
        else:
            live = await self._open_stream(interaction_id, question, row)
            if live is not None:
                await live.status(SEARCHING)
            history = history_turns(begun.history)
            with self.tracing.answer_trace(interaction_id=interaction_id, question=question.text,
                                           user=question.user, thread=question.thread or question.idempotency_key,
                                           platform=question.platform.value, release=release.name) as trace:
                try:
                    answer, passages = await compose_for_release(
                        self.searcher, self.composer, self.settings, question.text, history, release,
                        policy.search_filter, allow_llm=mode == Mode.ON, latency=latency, trace=trace,
                        rewriter=self.rewriter, sink=live,
                    )
                except StreamStopped:  # the kill-switch, set to off while the answer was being written
                    answer = maintenance_answer(self.settings.maintenance_message, question.text,
                                                release=release.name)
                    passages = []
                    switch_reason = live.switch_reason if live is not None else switch_reason
                trace.finish(answer.text, answer.status.value)
                trace_id = trace.trace_id
            if answer.error:
                log.warning("pipeline.llm_error", error=answer.error, fallback_reason=answer.fallback_reason)
        answer.interaction_id = interaction_id
        latency["total_before_delivery"] = round((time.perf_counter() - started) * 1000, 1)
        deliver = needs_delivery(question.platform)
        if not deliver:
            latency["deliver"] = 0.0
        answer.latency_ms = latency
        if not await self.interactions.finalize(interaction_id, answer, passages,
                                                index_version=release.index_version,
                                                switch_reason=switch_reason, deliver=deliver,
                                                trace_id=trace_id or None):
            log.warning("pipeline.already_answered", reason="another attempt recorded its answer first")
            return None
        if deliver:
            await self._first_attempt(interaction_id, question, answer, latency, live=live)
        elif live is not None:
            await self._finish_stream(live, answer)  # the local chat: the page's stream ends with the answer
        for hook in self.after_answer:
            try:
                await hook(interaction_id, answer)
            except Exception:  # noqa: BLE001 - a guard failing must not fail the answer
                log.exception("pipeline.after_answer_hook_failed", hook=getattr(hook, "__name__", str(hook)))
        if route.canary_id is not None and self.canary is not None:
            try:
                await self.canary.after_answer(route, interaction_id, answer)
            except Exception:  # noqa: BLE001 - the canary's bookkeeping must not fail the answer
                log.exception("pipeline.canary_hook_failed")
        log.info("pipeline.done", status=answer.status.value, fallback=answer.fallback, latency_ms=latency,
                 cost_usd=answer.cost_usd)
        return answer

    # --- delivery -------------------------------------------------------------------------------------------
    async def deliver(self, interaction_id: int) -> DeliveryOutcome:
        """One delivery attempt of a final interaction's reply — the answer, or the failure notice — as recorded
        (the ``deliver`` job). Nothing happens unless its delivery is pending: delivered once, never twice."""
        row = await self.interactions.get(interaction_id)
        if row is None or row.delivery_state != DeliveryState.PENDING:
            return DeliveryOutcome(None)
        question = Question.model_validate(row.question_payload)
        self._replace_earlier_stream(question, row)
        answer = None if row.status == Status.ERROR else recorded_answer(row)
        return await self._attempt(interaction_id, question, answer, answered_at=row.answered_at,
                                   failures=row.delivery_attempts, later=True)

    # --- streaming -------------------------------------------------------------------------------------------
    async def _open_stream(self, interaction_id: int, question: Question, row: Interaction) -> LiveAnswer | None:
        """A live answer when the platform's deliverer can stream here — and no earlier attempt has already
        streamed into the conversation (then its message is the one the answer replaces: no second answer)."""
        if self._replace_earlier_stream(question, row):
            return None
        opener = getattr(self.deliverers.get(question.platform), "open_stream", None)
        if opener is None:
            return None
        try:
            stream = await opener(question)
        except Exception as exc:  # noqa: BLE001 - no stream: the answer goes the placeholder-then-update way
            log.warning("pipeline.stream_unavailable", error=repr(exc)[:300])
            return None
        return LiveAnswer(self, interaction_id, question, stream) if stream is not None else None

    @staticmethod
    def _replace_earlier_stream(question: Question, row: Interaction) -> bool:
        """Point the delivery at a message an earlier attempt streamed (recorded in ``row.delivery``)."""
        earlier = (row.delivery or {}).get(STREAM_REFS)
        if not earlier:
            return False
        question.reply_target[STREAM_REFS] = dict(earlier)
        log.info("pipeline.replacing_earlier_stream")
        return True

    @staticmethod
    async def _end_stream(live: LiveAnswer, answer: Answer) -> dict[str, Any]:
        """The stream's last step: the final answer — or, for the maintenance reply, the stream abandoned with
        its text. Raises like a deliverer (:class:`~bot.delivery.DeliveryFailed`)."""
        if answer.status == Status.MAINTENANCE:
            refs = await live.stream.abandon(answer.text)
        else:
            refs = await live.stream.finish(answer)
        return dict(refs or {}) | {"streamed": True}

    async def _finish_stream(self, live: LiveAnswer, answer: Answer) -> None:
        """The local chat's stream ends with the answer (its delivery is the recorded row: nothing to retry)."""
        if live.broken:
            return
        try:
            await asyncio.wait_for(self._end_stream(live, answer), max(1.0, min(60.0, self.settings.job_timeout_s / 2)))
        except Exception as exc:  # noqa: BLE001 - the page reads the recorded answer anyway
            log.warning("pipeline.stream_finish_failed", error=repr(exc)[:300])

    async def _first_attempt(self, interaction_id: int, question: Question, answer: Answer | None,
                             latency: dict[str, float] | None = None,
                             live: LiveAnswer | None = None) -> DeliveryOutcome:
        """The answer job's own attempt — the stream's end when the answer was streamed (a stream broken midway:
        the ordinary delivery, over what was streamed); a retryable failure is handed over to the ``deliver``
        job, which replaces whatever the stream had shown."""
        if live is not None and live.broken:
            if live.refs:
                question.reply_target[STREAM_REFS] = live.refs  # replace what was streamed, never beside it
            live = None
        outcome = await self._attempt(interaction_id, question, answer, answered_at=utcnow(), failures=0,
                                      latency=latency, live=live)
        if outcome.retry_in_s is not None:
            await self._hand_over(interaction_id, question.idempotency_key, outcome.retry_in_s)
        return outcome

    async def _hand_over(self, interaction_id: int, idempotency_key: str, defer_s: float) -> None:
        if self.deliveries is not None and await self.deliveries.schedule(interaction_id, idempotency_key, defer_s):
            return
        log.warning("pipeline.delivery_not_scheduled", interaction_id=interaction_id,
                    hint="the sweeper re-enqueues it (final answers whose delivery is pending and has no job)")

    async def _resume_delivery(self, interaction_id: int) -> None:
        """A redelivered answer job for a final interaction whose delivery is pending (its worker died between
        recording and delivering): hand it to the ``deliver`` job (enqueued once, whoever asks)."""
        row = await self.interactions.get(interaction_id)
        if row is not None and row.delivery_state == DeliveryState.PENDING:
            await self._hand_over(interaction_id, row.idempotency_key, 0.0)

    async def _attempt(self, interaction_id: int, question: Question, answer: Answer | None, *,
                       answered_at: datetime | None, failures: int, later: bool = False,
                       latency: dict[str, float] | None = None, live: LiveAnswer | None = None) -> DeliveryOutcome:
        """Make one attempt and record its outcome: delivered (with what was posted), failed for good, or to be
        retried after :func:`retry_delay` (never past the deadline: the last attempt is made at the deadline)."""
        platform = question.platform
        deliverer = self.deliverers.get(platform)
        timeout_s = max(1.0, min(60.0, self.settings.job_timeout_s / 2))
        started = time.perf_counter()
        refs: dict[str, Any] = {}
        try:
            if live is not None and answer is not None:
                refs = await asyncio.wait_for(self._end_stream(live, answer), timeout_s)
            elif deliverer is None:
                if needs_delivery(platform):
                    raise DeliveryFailed(f"no deliverer for {platform.value} in this worker", retryable=False)
            elif answer is not None:
                refs = await asyncio.wait_for(deliverer.deliver(question, answer), timeout_s) or {}
            else:
                refs = await asyncio.wait_for(deliverer.deliver_failure(question, FAILURE_NOTICE), timeout_s) or {}
            failure = None
        except DeliveryFailed as exc:
            failure = exc
        except asyncio.TimeoutError:
            failure = DeliveryFailed(f"no answer from {platform.value} within {timeout_s:g} s", retryable=True)
        except Exception as exc:  # noqa: BLE001 - unexpected: logged with the traceback, retried until the deadline
            log.exception("pipeline.delivery_error", platform=platform.value)
            failure = DeliveryFailed(repr(exc)[:500], retryable=True)
        if failure is not None and live is not None:
            await live._record()  # what the stream had posted: the next attempt replaces it
        timing = latency if latency is not None else {}
        timing["deliver"] = round((time.perf_counter() - started) * 1000, 1)
        now = utcnow()
        if later and answered_at is not None:
            timing["delivery_wait"] = round((now - answered_at).total_seconds() * 1000, 1)
        attempt = failures + 1
        if failure is None:
            # recorded at once: a later retry (or the sweeper) finds it delivered and posts nothing
            if not await self.interactions.mark_delivered(interaction_id, refs, timing):
                # another attempt finished first (two attempts at once should not happen: see bot.queue)
                log.warning("pipeline.delivered_twice", platform=platform.value, refs=refs)
            log.info("pipeline.delivered", platform=platform.value, attempt=attempt, method=refs.get("method"))
            return DeliveryOutcome(DeliveryState.DELIVERED)
        deadline = (answered_at or now) + timedelta(seconds=self.settings.delivery_deadline_s)
        if not failure.retryable or now >= deadline:
            await self.interactions.record_delivery_failure(interaction_id, failure.error, final=True,
                                                            latency_ms=timing)
            log.error("pipeline.delivery_failed", platform=platform.value, error=failure.error, attempt=attempt,
                      reason="permanent error" if not failure.retryable else "deadline passed")
            return DeliveryOutcome(DeliveryState.FAILED, error=failure.error)
        delay = min(retry_delay(self.settings, attempt, failure.retry_after_s),
                    max(0.05, (deadline - now).total_seconds()))
        await self.interactions.record_delivery_failure(interaction_id, failure.error, final=False,
                                                        next_at=now + timedelta(seconds=delay), latency_ms=timing)
        log.warning("pipeline.delivery_retry", platform=platform.value, error=failure.error, attempt=attempt,
                    retry_in_s=round(delay, 2), retry_after_s=failure.retry_after_s)
        return DeliveryOutcome(DeliveryState.PENDING, retry_in_s=delay, error=failure.error)

    async def fail(self, interaction_id: int, error: str) -> None:
        """The job failed for good: record it and tell the user in their thread (never a silent failure). The
        notice is delivered like an answer: retried, then recorded, if the platform is down."""
        row = await self.interactions.get(interaction_id)
        question = await self.interactions.fail(interaction_id, error)
        if question is None:
            return
        if row is not None:
            self._replace_earlier_stream(question, row)  # a half-streamed answer becomes the notice
        await self._first_attempt(interaction_id, question, None)
