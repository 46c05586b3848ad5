"""Shadow answers: the candidate of a shadow canary answers a sampled live question in the background.

The answer job records the live answer and delivers it; for a question the canary sampled
(:func:`playbooks.canary.route_release` gave it the ``shadow`` arm) it then enqueues the ``shadow`` job. That job
answers the same question, with the same thread history and channel policy, as the candidate release would
(:func:`bot.pipeline.compose_for_release`, the core the worker and the evaluation share) — nothing is posted
anywhere — and hands the result to :func:`playbooks.canary.record_shadow`, which compares it with the live answer
and stores it. The canary's cost budget is checked before each one; the kill-switch is obeyed (no model call
unless the switch is on).
"""

from __future__ import annotations

import time
from typing import Any

from arq.connections import ArqRedis

from bot.core.log import get_logger
from bot.core.types import Question
from bot.pipeline import AnswerPipeline, compose_for_release, history_turns
from playbooks.canary import ShadowResult, record_shadow, shadow_target
from playbooks.channel_policy import resolve_policy
from playbooks.killswitch import Mode, effective_mode

log = get_logger(__name__)

SHADOW_JOB = "shadow"


def shadow_job_id(interaction_id: int) -> str:
    return f"deskmate:shadow:{interaction_id}"


async def enqueue_shadow(redis: ArqRedis, interaction_id: int) -> None:
    """Queue the background answer of ``interaction_id`` (once: the job id is the interaction's)."""
    await redis.enqueue_job(SHADOW_JOB, interaction_id, _job_id=shadow_job_id(interaction_id))


async def answer_in_shadow(pipeline: AnswerPipeline, interaction_id: int) -> str:
    """Answer ``interaction_id`` as the shadow canary's candidate and record the comparison; returns what
    happened (``recorded``, ``skipped``: no running shadow canary, over budget, already done, switch not on)."""
    target = await shadow_target(pipeline.db, interaction_id)
    if target is None:
        return "skipped"
    canary, row, release = target
    question = Question.model_validate(row.question_payload)
    settings = pipeline.settings
    async with pipeline.db.asession() as session:
        mode, _ = await effective_mode(session, question.platform.value, question.channel)
        policy = await resolve_policy(session, question.platform.value, question.channel, question.channel_type,
                                      release.knowledge_sets or None)
    if mode != Mode.ON or not policy.enabled:
        return "skipped"
    pairs = max(1, settings.history_turns // 2) if settings.history_turns > 0 else 0
    history = history_turns(await pipeline.interactions.thread_history(row, pairs=pairs))
    latency: dict[str, float] = {}
    started = time.perf_counter()
    try:
        answer, _ = await compose_for_release(pipeline.searcher, pipeline.composer, settings, question.text, history,
                                              release, policy.search_filter, allow_llm=True, latency=latency,
                                              rewriter=pipeline.rewriter)
        result = ShadowResult(text=answer.text, status=answer.status.value,
                              cited_doc_ids=list(dict.fromkeys(s.doc_id for s in answer.sources)),
                              fallback=answer.fallback, latency_ms=round((time.perf_counter() - started) * 1000, 1),
                              cost_usd=answer.cost_usd)
    except Exception as exc:  # noqa: BLE001 - recorded as the candidate's error; the live answer is untouched
        log.warning("shadow.failed", error=repr(exc)[:300])
        result = ShadowResult(text="", status="error", cited_doc_ids=[], fallback=False,
                              latency_ms=round((time.perf_counter() - started) * 1000, 1), cost_usd=0.0,
                              error=repr(exc)[:500])
    shadow = await record_shadow(pipeline.db, settings, canary, row, result)
    log.info("shadow.recorded", interaction_id=interaction_id, canary_id=canary.id, overlap=shadow.overlap,
             citation_precision=shadow.citation_precision, judge=shadow.judge, cost_usd=shadow.cost_usd)
    return "recorded"


async def shadow_job(ctx: dict[str, Any], interaction_id: int) -> str:
    """The arq job (``bot/worker.py``)."""
    return await answer_in_shadow(ctx["pipeline"], interaction_id)
