"""The answer step of the pipeline: retrieved passages in, a cited answer out, whatever state the LLM is in.

Order of decisions in :meth:`AnswerEngine.compose`:

1. no passage (the pipeline already dropped questions whose best passage is below the release's
   ``min_score``) → an honest "not found", and no LLM call;
2. retrieval-only mode or no API key → the extractive fallback;
3. with ``llm_max_concurrent`` set, a wait until fewer answers than that are being written by the model (the
   answer has its passages already: it starts the moment a call ends); then the circuit breaker open → the
   extractive fallback;
4. otherwise Claude; a transient failure (after the SDK's own retries) counts against the breaker, and any
   failure falls back to the extractive answer rather than reaching the user as an error;
5. the model saying the sources don't answer → "not found" with the closest sources.

What Deskmate words itself — the "not found" reply, the extractive fallback's label and reason, the default
maintenance reply — is in the asker's language (:mod:`knowledge.language` detects it from the question,
:mod:`bot.status_text` words it); a model answer is in it because the prompt says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

import redis.asyncio
from anthropic import AsyncAnthropic

from bot.breaker import CircuitBreaker
from bot.core.log import get_logger
from bot.core.pricing import cost_usd
from bot.core.settings import Settings
from bot.core.types import Answer, Source, Status
from bot.fallback import extractive_answer
from knowledge.language import detect_language
from bot.llm import (
    GenerationConfig,
    LLMError,
    LLMResult,
    StreamStopped,
    TextSink,
    Turn,
    generate,
    make_client,
)
from bot.status_text import (
    REASON_CIRCUIT_OPEN,
    REASON_NO_KEY,
    REASON_RETRIEVAL_ONLY,
    maintenance_text,
    request_failed,
    unavailable,
    wording,
)
from knowledge.passage import Passage

log = get_logger(__name__)

BREAKER_NAME = "anthropic"
CLOSEST_SOURCES = 3

_MARKER = re.compile(r"\s?\[\d+\]")


class AnswerEngine:
    """Turns passages into an answer: Claude when it is available, an extractive fallback when it is not."""

    def __init__(
        self,
        settings: Settings,
        redis: redis.asyncio.Redis | None,
        client: AsyncAnthropic | None = None,
        *,
        stream: bool = False,
    ) -> None:
        self.settings = settings
        if client is None and settings.anthropic_api_key:
            client = make_client(
                api_key=settings.anthropic_api_key,
                base_url=settings.anthropic_base_url,
                max_retries=settings.llm_max_retries,
                timeout_s=settings.llm_timeout_s,
            )
        self.client = client
        self.stream = stream
        #: one of the model calls this process makes at once (settings.llm_max_concurrent; 0: no bound of its own)
        self._model_slot: contextlib.AbstractAsyncContextManager[object] = (
            asyncio.Semaphore(settings.llm_max_concurrent) if settings.llm_max_concurrent
            else contextlib.nullcontext())
        #: None without Redis: every call is allowed (a breaker only one process sees would mislead).
        self.breaker = (
            CircuitBreaker(
                redis,
                BREAKER_NAME,
                threshold=settings.breaker_failure_threshold,
                cooldown_s=settings.breaker_cooldown_s,
                trial_timeout_s=settings.llm_timeout_s * (settings.llm_max_retries + 1) + 10,
            )
            if redis is not None
            else None
        )

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    async def compose(
        self,
        question: str,
        history: list[Turn],
        passages: list[Passage],
        config: GenerationConfig,
        *,
        allow_llm: bool = True,
        sink: TextSink | None = None,
    ) -> Answer:
        """The answer to ``question`` from ``passages`` (already judged relevant by the caller). With a ``sink``,
        the model's answer is streamed into it as it is written (the fallback and "not found" never are: they
        are delivered at once); a sink's :class:`~bot.llm.StreamStopped` is raised through."""
        if not passages:
            return not_found_answer(passages, question=question)
        relevant = passages  # what the fallback may quote
        if not allow_llm:
            return fallback_answer(question, relevant, REASON_RETRIEVAL_ONLY)
        if self.client is None:
            return fallback_answer(question, relevant, REASON_NO_KEY)
        queued = time.perf_counter()
        async with self._model_slot:
            waited = _ms_since(queued)
            if self.breaker is not None and not await self.breaker.allow():  # asked once it would call
                answer = fallback_answer(question, relevant, REASON_CIRCUIT_OPEN)
            else:
                answer = await self._generate(self.client, question, history, passages, config, sink)
        answer.llm_slot_wait_ms = waited
        return answer

    async def _generate(self, client: AsyncAnthropic, question: str, history: list[Turn], passages: list[Passage],
                        config: GenerationConfig, sink: TextSink | None) -> Answer:
        relevant = passages  # what the fallback may quote
        started = time.perf_counter()
        try:
            result = await generate(client, question, history, passages, config, stream=self.stream, sink=sink)
        except StreamStopped:
            raise
        except LLMError as exc:
            latency = _ms_since(started)
            if exc.transient:
                await self._record(success=False)
                reason = unavailable(exc.reason)
            else:
                # the API answered, so it is up: a rejected request says nothing about availability
                await self._record(success=True)
                reason = request_failed(exc.reason)
            answer = fallback_answer(question, relevant, reason)
            answer.error = repr(exc)
            answer.llm_latency_ms = latency
            return answer
        except Exception as exc:  # a bug here must still produce an answer
            log.exception("llm_unexpected_error")
            answer = fallback_answer(question, relevant, request_failed("unexpected error"))
            answer.error = repr(exc)
            answer.llm_latency_ms = _ms_since(started)
            return answer

        latency = _ms_since(started)
        await self._record(success=True)
        return self._from_result(result, question, passages, latency)

    async def _record(self, *, success: bool) -> None:
        if self.breaker is not None:
            await self.breaker.record(success=success)

    def _from_result(self, result: LLMResult, question: str, passages: list[Passage], latency_ms: float) -> Answer:
        cost = cost_usd(result.model, result.usage, self.settings.model_prices)
        if result.not_found:
            answer = not_found_answer(passages, explanation=result.text, question=question)
        else:
            answer = Answer(text=result.text, sources=result.sources)
        answer.usage = result.usage
        answer.cost_usd = cost
        answer.model = result.model
        answer.llm_latency_ms = latency_ms
        return answer


def closest_sources(passages: list[Passage], limit: int = CLOSEST_SOURCES) -> list[Source]:
    """Up to ``limit`` sources from the best passages, one per document section."""
    sources: list[Source] = []
    seen: set[tuple[str, str]] = set()
    for passage in passages:
        key = (passage.doc_id, passage.heading)
        if key in seen:
            continue
        seen.add(key)
        sources.append(
            Source(
                number=len(sources) + 1,
                doc_id=passage.doc_id,
                title=passage.title,
                location=passage.location,
                heading=passage.heading,
            )
        )
        if len(sources) == limit:
            break
    return sources


def not_found_answer(passages: list[Passage], explanation: str = "", *, question: str = "") -> Answer:
    """The honest "I don't know": what was not found, the model's note if any, and the closest sources — worded
    in the language of ``question`` (English without one)."""
    words = wording(detect_language(question))
    sources = closest_sources(passages)
    parts = [words.not_found]
    explanation = _MARKER.sub("", explanation).strip()  # its markers pointed at the model's own sources
    if explanation:
        parts.append(explanation)
    if sources:
        parts.append(words.closest_sources)
    return Answer(text="\n\n".join(parts), sources=sources, status=Status.NOT_FOUND)


def fallback_answer(question: str, passages: list[Passage], reason: str) -> Answer:
    text, sources = extractive_answer(question, passages, reason, detect_language(question))
    log.info("answer_fallback", reason=reason)
    return Answer(text=text, sources=sources, fallback=True, fallback_reason=reason)


def maintenance_answer(message: str, question: str = "", *, release: str | None = None) -> Answer:
    """The maintenance reply (kill-switch off): ``message`` as configured, or — left at its default — the
    default in the language of ``question``."""
    return Answer(text=maintenance_text(message, detect_language(question)), status=Status.MAINTENANCE,
                  release=release)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
