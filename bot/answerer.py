"""The bot's :class:`feedback.evals.answerer.Answerer`: golden-set questions through the worker's own pipeline.

:class:`PipelineAnswerer` runs :func:`bot.pipeline.compose_for_release` — the release's search query, retrieval
and generation, no conversation history, no channel restriction beyond the release's knowledge sets — over any
searcher and composer: a worker's retriever and answer engine, or those of :func:`evaluation_answerer`, which
builds its own without Redis (the circuit breaker is off, so an evaluation's failures never open the
production breaker), tracer or deliverers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bot.answering import AnswerEngine
from bot.core.settings import Settings
from bot.pipeline import Composer, Searcher, compose_for_release
from bot.rewrite import QueryRewriter
from feedback.evals.answerer import EvalAnswer
from feedback.models import Release
from knowledge.config import KnowledgeConfig
from knowledge.index import IndexStore
from knowledge.retrieval import Retriever, SearchFilter


class PipelineAnswerer:
    """Answers as a release would, through :func:`bot.pipeline.compose_for_release`."""

    def __init__(self, settings: Settings, searcher: Searcher, composer: Composer,
                 rewriter: QueryRewriter | None = None) -> None:
        self.settings = settings
        self.searcher = searcher
        self.composer = composer
        self.rewriter = rewriter

    async def warm_up(self, release: Release) -> None:
        """Load the embedder and the release's index (raises ``IndexNotFound`` when it is not here)."""
        await self.searcher.asearch("warm up", kb=release.kb, version=release.index_version, k=1)

    async def answer(self, question: str, release: Release, *, allow_llm: bool) -> EvalAnswer:
        latency: dict[str, float] = {}
        search_filter = SearchFilter(knowledge_sets=list(release.knowledge_sets) if release.knowledge_sets else None)
        answer, passages = await compose_for_release(self.searcher, self.composer, self.settings, question, [],
                                                     release, search_filter, allow_llm=allow_llm, latency=latency,
                                                     rewriter=self.rewriter)
        return EvalAnswer(text=answer.text, status=answer.status, sources=list(answer.sources), passages=passages,
                          fallback=answer.fallback, fallback_reason=answer.fallback_reason, usage=answer.usage,
                          cost_usd=answer.cost_usd, latency_ms=latency)


@asynccontextmanager
async def evaluation_answerer(settings: Settings) -> AsyncIterator[PipelineAnswerer]:
    """An answerer with its own index, retriever and answer engine (no Redis, tracer or deliverers)."""
    engine = AnswerEngine(settings, None)
    try:
        yield PipelineAnswerer(settings, Retriever(IndexStore(KnowledgeConfig.from_settings(settings))), engine,
                               QueryRewriter(settings, engine.client, None))
    finally:
        await engine.close()
