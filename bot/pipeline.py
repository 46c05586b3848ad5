"""The answer pipeline: one pending interaction in, one recorded, traced and delivered answer out.

Steps, in order: begin the attempt (an already-final interaction is not answered twice) → playbooks
(kill-switch, active release, channel policy) → retrieve → compose (Claude or the extractive fallback) →
record → trace → deliver → after-answer hooks. Each step's latency goes into the answer and the interaction.

:class:`AnswerPipeline` depends on small Protocols (:class:`Searcher`, :class:`Composer`, :class:`Tracing`),
so tests can drive it with in-memory parts; the worker builds it from its :class:`~bot.runtime.Runtime`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import structlog

from bot.core.log import get_logger, redact
from bot.core.settings import Settings
from bot.answering import not_found_answer
from bot.core.types import Answer, Platform, Question, Status, Usage
from bot.delivery import Deliverer
from bot.llm import GenerationConfig, Turn
from bot.status_text import FAILURE_NOTICE
from feedback.db import Database
from feedback.interactions import Exchange, InteractionStore, relevance
from feedback.models import Release
from knowledge.index import IndexNotFound
from knowledge.passage import Passage
from knowledge.retrieval import FusionConfig, SearchFilter
from playbooks.channel_policy import resolve_policy
from playbooks.killswitch import Mode, effective_mode
from feedback.releases import active_release

log = get_logger(__name__)


class Searcher(Protocol):
    async def asearch(self, query: str, **kwargs: Any) -> list[Passage]: ...


class Composer(Protocol):
    async def compose(self, question: str, history: list[Turn], passages: list[Passage],
                      config: GenerationConfig, *, allow_llm: bool = True) -> Answer: ...


class TraceSpan(Protocol):
    """What the pipeline writes into one answer's trace."""

    @property
    def trace_id(self) -> str | None: ...

    def retrieval(self, passages: Sequence[Passage], latency_ms: float, query: str) -> None: ...

    def generation(self, *, model: str, input_messages: Any, output_text: str, usage: Usage, cost_usd: float,
                   latency_ms: float, fallback: bool) -> None: ...

    def finish(self, answer_text: str, status: str) -> None: ...


class Tracing(Protocol):
    def answer_trace(self, *, interaction_id: int | None, question: str, user: str, thread: str, platform: str,
                     release: str | None) -> AbstractContextManager[TraceSpan]: ...


#: Runs after every recorded answer (budget guard, metrics); a failing hook never fails the answer.
AfterAnswerHook = Callable[[int, Answer], Awaitable[None]]


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


async def compose_for_release(
    searcher: Searcher, composer: Composer, settings: Settings, text: str, history: list[Turn], release: Release,
    search_filter: SearchFilter, *, allow_llm: bool, latency: dict[str, float], trace: TraceSpan | None = None,
) -> tuple[Answer, list[Passage]]:
    """Retrieve and compose one answer as ``release`` would: the core the worker and the evaluation share."""
    t0 = time.perf_counter()
    try:
        passages = await searcher.asearch(
            text, kb=release.kb, version=release.index_version, k=release.retrieval_k,
            candidates=release.retrieval_candidates, search_filter=search_filter,
            fusion=FusionConfig.from_dict(release.fusion),
        )
    except IndexNotFound as exc:
        log.error("pipeline.index_missing", error=str(exc))
        passages = []
    latency["retrieve"] = round((time.perf_counter() - t0) * 1000, 1)
    if trace is not None:
        trace.retrieval(passages, latency["retrieve"], text)
    t1 = time.perf_counter()
    if not passages or relevance(passages) < release.min_score:
        answer = not_found_answer(passages)  # nothing relevant: no model call, the closest sources shown
    else:
        answer = await composer.compose(text, history, passages, generation_config(release, settings.llm_timeout_s),
                                        allow_llm=allow_llm)
    latency["generate"] = round((time.perf_counter() - t1) * 1000, 1)
    if trace is not None and (answer.model or answer.usage.input_tokens):
        trace.generation(model=answer.model or release.model, input_messages=text, output_text=answer.text,
                         usage=answer.usage, cost_usd=answer.cost_usd,
                         latency_ms=answer.llm_latency_ms or latency["generate"], fallback=answer.fallback)
    answer.release = release.name
    return answer, passages


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
    ) -> None:
        self.settings = settings
        self.db = db
        self.interactions = interactions
        self.searcher = searcher
        self.composer = composer
        self.tracing = tracing
        self.deliverers = deliverers
        self.after_answer = after_answer

    async def run(self, interaction_id: int) -> Answer | None:
        """Answer one interaction. Returns None when it is missing or already final (a redelivered job)."""
        started = time.perf_counter()
        row = await self.interactions.begin_attempt(interaction_id)
        if row is None:
            log.info("pipeline.skipped", interaction_id=interaction_id, reason="missing or already final")
            return None
        question = Question.model_validate(row.question_payload)
        async with self.db.asession() as session:
            mode, switch = await effective_mode(session, question.platform.value, question.channel)
            release = await active_release(session, self.settings)
            policy = await resolve_policy(session, question.platform.value, question.channel,
                                          question.channel_type, release.knowledge_sets or None)
        structlog.contextvars.bind_contextvars(interaction_id=interaction_id, release=release.name)
        log.info("pipeline.start", platform=question.platform.value, mode=mode.value, question=redact(question.text))

        latency: dict[str, float] = {}
        passages: list[Passage] = []
        if mode == Mode.OFF or not policy.enabled:
            answer = Answer(text=self.settings.maintenance_message, status=Status.MAINTENANCE, release=release.name)
        else:
            pairs = max(1, self.settings.history_turns // 2) if self.settings.history_turns > 0 else 0
            history = history_turns(await self.interactions.thread_history(row, pairs=pairs))
            with self.tracing.answer_trace(interaction_id=interaction_id, question=question.text,
                                           user=question.user, thread=question.thread or question.idempotency_key,
                                           platform=question.platform.value, release=release.name) as trace:
                answer, passages = await compose_for_release(
                    self.searcher, self.composer, self.settings, question.text, history, release,
                    policy.search_filter, allow_llm=mode == Mode.ON, latency=latency, trace=trace,
                )
                trace.finish(answer.text, answer.status.value)
                trace_id = trace.trace_id
            if answer.error:
                log.warning("pipeline.llm_error", error=answer.error, fallback_reason=answer.fallback_reason)
            if trace_id:
                await self.interactions.set_trace(interaction_id, trace_id)
        answer.interaction_id = interaction_id
        latency["total_before_delivery"] = round((time.perf_counter() - started) * 1000, 1)
        answer.latency_ms = latency
        await self.interactions.finalize(interaction_id, answer, passages, index_version=release.index_version,
                                         switch_reason=switch.reason if switch else None)

        t2 = time.perf_counter()
        delivery = await self.deliver(question, answer)
        latency["deliver"] = round((time.perf_counter() - t2) * 1000, 1)
        await self.interactions.set_delivery(interaction_id, delivery, latency)
        for hook in self.after_answer:
            try:
                await hook(interaction_id, answer)
            except Exception:  # noqa: BLE001 - a guard failing must not fail the answer
                log.exception("pipeline.after_answer_hook_failed", hook=getattr(hook, "__name__", str(hook)))
        log.info("pipeline.done", status=answer.status.value, fallback=answer.fallback, latency_ms=latency,
                 cost_usd=answer.cost_usd)
        return answer

    async def deliver(self, question: Question, answer: Answer) -> dict[str, Any]:
        """Hand the answer to its platform. The answer is already recorded (final), so a retry of the job
        would skip it: a deliverer that raises is recorded as a failed delivery instead of failing the job."""
        deliverer = self.deliverers.get(question.platform)
        if deliverer is None:
            return {}
        try:
            return await deliverer.deliver(question, answer) or {}
        except Exception as exc:  # noqa: BLE001 - recorded on the interaction and logged with the traceback
            log.exception("pipeline.delivery_failed", platform=question.platform.value)
            return {"ok": False, "error": repr(exc)[:500]}

    async def fail(self, interaction_id: int, error: str) -> None:
        """The job failed for good: record it and tell the user in their thread (never a silent failure)."""
        question = await self.interactions.fail(interaction_id, error)
        if question is None:
            return
        deliverer = self.deliverers.get(question.platform)
        if deliverer is not None:
            try:
                await deliverer.deliver_failure(question, FAILURE_NOTICE)
            except Exception:  # noqa: BLE001
                log.exception("pipeline.failure_notice_failed", interaction_id=interaction_id)
