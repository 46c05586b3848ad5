"""The answer pipeline: one pending interaction in, one recorded, traced and delivered answer out.

Steps, in order: load the interaction (an already-final one is not answered twice) → playbooks (kill-switch,
channel policy, active release) → retrieve → compose (Claude or the extractive fallback) → record → trace →
deliver. Each step's latency goes into the answer and the interaction row.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import inspect as sa_inspect
from sqlmodel import col, select

from bot.answering import ComposedAnswer, not_found_answer
from playbooks.channel_policy import resolve_policy
from bot.core.clock import utcnow
from bot.core.log import get_logger, redact
from bot.core.types import FINAL_STATUSES, Answer, Question, Status
from bot.llm import GenerationConfig, Turn
from feedback.models import Interaction, Release
from knowledge.index import IndexNotFound
from knowledge.passage import Passage
from knowledge.retrieval import FusionConfig, SearchFilter
from playbooks.killswitch import Mode, effective_mode
from playbooks.releases import active_release

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = get_logger(__name__)


def hash_user(user: str) -> str:
    return hashlib.sha256(f"deskmate:{user}".encode()).hexdigest()[:32] if user else ""


def generation_config(release: Release, timeout_s: float) -> GenerationConfig:
    return GenerationConfig(model=release.model, max_tokens=release.max_tokens, temperature=release.temperature,
                            prompt_template=release.prompt_template, prompt_version=release.prompt_version,
                            timeout_s=timeout_s)


def relevance(passages: list[Passage]) -> float:
    """An absolute relevance estimate of the best passage: its cosine similarity to the question.

    Fused scores are relative to the query's other candidates, so they cannot tell "nothing relevant" from
    "the best of a good lot"; the dense cosine can.
    """
    return max((p.dense_score or 0.0 for p in passages), default=0.0)


async def compose_for_release(
    rt: Runtime, text: str, history: list[Turn], release: Release, search_filter: SearchFilter, *,
    allow_llm: bool, latency: dict[str, float], trace: Any = None,
) -> tuple[ComposedAnswer, list[Passage]]:
    """Retrieve and compose one answer as ``release`` would: the core the worker and the eval runner share."""
    t0 = time.perf_counter()
    try:
        passages = await rt.retriever.asearch(
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
        composed = not_found_answer(passages)
    else:
        composed = await rt.engine.compose(text, history, passages, generation_config(release, rt.settings.llm_timeout_s),
                                           min_score=0.0, allow_llm=allow_llm)
    latency["generate"] = round((time.perf_counter() - t1) * 1000, 1)
    if trace is not None and (composed.model or composed.usage.input_tokens):
        trace.generation(model=composed.model or release.model, input_messages=text, output_text=composed.text,
                         usage=composed.usage, cost_usd=composed.cost_usd,
                         latency_ms=composed.llm_latency_ms or latency["generate"], fallback=composed.fallback)
    return composed, passages


class AnswerPipeline:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def history(self, interaction: Interaction) -> list[Turn]:
        """Earlier answered turns of the same thread, oldest first, bounded by ``history_turns``."""
        if not interaction.thread or self.rt.settings.history_turns <= 0:
            return []
        pairs = max(1, self.rt.settings.history_turns // 2)
        async with self.rt.db.asession() as session:
            stmt = (
                select(Interaction)
                .where(Interaction.platform == interaction.platform, Interaction.channel == interaction.channel,
                       Interaction.thread == interaction.thread, col(Interaction.id) < interaction.id,
                       col(Interaction.status).in_([Status.ANSWERED, Status.NOT_FOUND]))
                .order_by(col(Interaction.id).desc())
                .limit(pairs)
            )
            rows = list((await session.exec(stmt)).all())
        turns: list[Turn] = []
        for row in reversed(rows):
            turns.append(Turn(role="user", text=row.question))
            if row.answer:
                turns.append(Turn(role="assistant", text=row.answer))
        return turns

    async def run(self, interaction_id: int) -> Answer | None:
        """Answer one interaction. Returns None when it was already final (a redelivered job)."""
        rt = self.rt
        started = time.perf_counter()
        async with rt.db.asession() as session:
            interaction = await session.get(Interaction, interaction_id)
            if interaction is None:
                log.warning("pipeline.missing_interaction", interaction_id=interaction_id)
                return None
            if interaction.status in FINAL_STATUSES:
                log.info("pipeline.already_final", interaction_id=interaction_id, status=interaction.status)
                return None
            interaction.attempts += 1
            session.add(interaction)
            await session.commit()
            question = Question.model_validate(interaction.question_payload)
            mode, switch = await effective_mode(session, question.platform.value, question.channel)
            release = await active_release(session, rt.settings)
            if sa_inspect(interaction).expired_attributes:  # a rollback in active_release (racing bootstrap)
                await session.refresh(interaction)
            policy = await resolve_policy(session, question.platform.value, question.channel,
                                          question.channel_type, release.knowledge_sets or None)
        structlog.contextvars.bind_contextvars(interaction_id=interaction_id, release=release.name)
        log.info("pipeline.start", platform=question.platform.value, mode=mode.value, question=redact(question.text))

        latency: dict[str, float] = {}
        passages: list[Passage] = []
        if mode == Mode.OFF or not policy.enabled:
            answer = Answer(text=rt.settings.maintenance_message, status=Status.MAINTENANCE,
                            release=release.name)
        else:
            with rt.tracer.answer_trace(interaction_id=interaction_id, question=question.text, user=question.user,
                                        thread=question.thread or question.idempotency_key,
                                        platform=question.platform.value, release=release.name) as trace:
                composed, passages = await compose_for_release(
                    rt, question.text, await self.history(interaction), release, policy.search_filter,
                    allow_llm=mode == Mode.ON, latency=latency, trace=trace,
                )
                trace.finish(composed.text, composed.status.value)
                trace_id = trace.trace_id
            answer = Answer(
                text=composed.text, sources=composed.sources, status=composed.status, fallback=composed.fallback,
                fallback_reason=composed.fallback_reason, release=release.name, model=composed.model,
                usage=composed.usage, cost_usd=composed.cost_usd, passages=passages,
            )
            if composed.error:
                log.warning("pipeline.llm_error", error=composed.error, fallback_reason=composed.fallback_reason)
            await self._set_trace(interaction_id, trace_id)
        answer.interaction_id = interaction_id
        latency["total_before_delivery"] = round((time.perf_counter() - started) * 1000, 1)
        answer.latency_ms = latency
        await self.record(interaction_id, answer, passages, release, switch_reason=switch.reason if switch else None)

        t2 = time.perf_counter()
        delivery = await self.deliver(question, answer)
        latency["deliver"] = round((time.perf_counter() - t2) * 1000, 1)
        await self._set_delivery(interaction_id, delivery, latency)
        for hook in rt.after_answer:
            try:
                await hook(rt, interaction_id, answer)
            except Exception:  # noqa: BLE001 - a guard failing must not fail the answer
                log.exception("pipeline.after_answer_hook_failed", hook=getattr(hook, "__name__", str(hook)))
        log.info("pipeline.done", status=answer.status.value, fallback=answer.fallback, latency_ms=latency,
                 cost_usd=answer.cost_usd)
        return answer

    async def deliver(self, question: Question, answer: Answer) -> dict[str, Any]:
        """Hand the answer to its platform. The answer is already recorded (final), so a retry of the job
        would skip it: a deliverer that raises is recorded as a failed delivery instead of failing the job."""
        deliverer = self.rt.deliverers.get(question.platform)
        if deliverer is None:
            return {}
        try:
            return await deliverer.deliver(question, answer) or {}
        except Exception as exc:  # noqa: BLE001 - recorded on the interaction and logged with the traceback
            log.exception("pipeline.delivery_failed", platform=question.platform.value)
            return {"ok": False, "error": repr(exc)[:500]}

    async def record(self, interaction_id: int, answer: Answer, passages: list[Passage], release: Release,
                     switch_reason: str | None = None) -> None:
        async with self.rt.db.asession() as session:
            row = await session.get(Interaction, interaction_id)
            assert row is not None
            row.status = answer.status.value
            row.answer = answer.text
            row.sources = [s.model_dump() for s in answer.sources]
            row.passages = [p.model_dump(exclude={"text"}) | {"text": p.text[:2000]} for p in passages]
            row.top_score = relevance(passages) if passages else None
            row.model = answer.model
            row.release = release.name
            row.index_version = passages[0].index_version if passages else release.index_version
            row.fallback = answer.fallback
            row.fallback_reason = answer.fallback_reason or (switch_reason if answer.status == Status.MAINTENANCE else None)
            row.latency_ms = dict(answer.latency_ms)
            row.input_tokens = answer.usage.input_tokens
            row.output_tokens = answer.usage.output_tokens
            row.cache_read_tokens = answer.usage.cache_read_tokens
            row.cache_write_tokens = answer.usage.cache_write_tokens
            row.cost_usd = answer.cost_usd
            row.answered_at = utcnow()
            session.add(row)
            await session.commit()

    async def _set_trace(self, interaction_id: int, trace_id: str | None) -> None:
        if not trace_id:
            return
        async with self.rt.db.asession() as session:
            row = await session.get(Interaction, interaction_id)
            if row is not None:
                row.trace_id = trace_id
                session.add(row)
                await session.commit()

    async def _set_delivery(self, interaction_id: int, delivery: dict[str, Any], latency: dict[str, float]) -> None:
        async with self.rt.db.asession() as session:
            row = await session.get(Interaction, interaction_id)
            if row is not None:
                row.delivery = delivery
                row.latency_ms = dict(latency)
                session.add(row)
                await session.commit()

    async def fail(self, interaction_id: int, error: str) -> None:
        """The job failed for good: record it and tell the user in their thread (never a silent failure)."""
        async with self.rt.db.asession() as session:
            row = await session.get(Interaction, interaction_id)
            if row is None or row.status in FINAL_STATUSES:
                return
            row.status = Status.ERROR
            row.error = error[:4000]
            row.answered_at = utcnow()
            session.add(row)
            await session.commit()
            question = Question.model_validate(row.question_payload)
        deliverer = self.rt.deliverers.get(question.platform)
        if deliverer is not None:
            try:
                await deliverer.deliver_failure(
                    question, "Sorry — something went wrong while answering. The team has been notified; "
                              "please try again in a few minutes.")
            except Exception:  # noqa: BLE001
                log.exception("pipeline.failure_notice_failed", interaction_id=interaction_id)

