"""The components one process builds from its settings, shared by its jobs and request handlers.

Nothing here is a source of truth: the database and Redis are. A web process builds the light parts (database,
Redis, the interaction store and intake); a worker also loads the embedder, the index, the LLM client and the budget
guard — once per process, not per job. The worker (:mod:`bot.worker`) adds the chat surfaces' deliverers.
This is where the layers are wired together.
"""

from __future__ import annotations

import asyncio
import functools
import gc
from dataclasses import dataclass, field

from arq.connections import ArqRedis

from bot.answering import AnswerEngine
from bot.core.log import configure_logging, get_logger
from bot.core.settings import Settings
from bot.core.types import Platform
from bot.delivery import Deliverer
from bot.intake import Intake
from knowledge.language import warm_up as load_language_model
from bot.notifier import AdminChannelNotifier
from bot.pipeline import AfterAnswerHook, AnswerPipeline
from bot.redis_conn import connect
from bot.rewrite import QueryRewriter
from bot.tracing import Tracer
from feedback.db import Database, get_database
from feedback.interactions import InteractionStore
from feedback.votes import Votes
from knowledge.config import KnowledgeConfig
from knowledge.index import IndexStore
from knowledge.retrieval import Retriever
from knowledge.search_process import SearchProcess, one_blas_thread
from playbooks.canary import CanaryGuard
from playbooks.guard import Guard
from bot.shadow import enqueue_shadow
from playbooks.learned import LearnedAnswers

log = get_logger(__name__)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    redis: ArqRedis
    store: IndexStore | None = None  # worker
    retriever: Retriever | SearchProcess | None = None  # worker: in child processes (DESKMATE_SEARCH_PROCESSES) or not
    engine: AnswerEngine | None = None  # worker
    rewriter: QueryRewriter | None = None  # worker: the search query's rewrite model (the engine's client, breaker)
    tracer: Tracer | None = None  # built by build_runtime for every process (votes score their traces)
    guard: Guard | None = None  # worker: the budget guard and alerts (after each answer and by cron)
    canary: CanaryGuard | None = None  # the canary's decisions (after answers, votes and by cron); shadow answers
    deliverers: dict[Platform, Deliverer] = field(default_factory=dict)
    after_answer: list[AfterAnswerHook] = field(default_factory=list)
    interactions: InteractionStore = field(init=False)
    intake: Intake = field(init=False)

    def __post_init__(self) -> None:
        self.interactions = InteractionStore(self.db, user_salt=self.settings.user_hash_salt)
        self.intake = Intake(self.settings, self.interactions, self.redis)

    @property
    def votes(self) -> Votes:
        """The one vote path (record, then score the trace; then a running canary's decision, when due)."""
        return Votes(self.db, user_salt=self.settings.user_hash_salt, scores=self.tracer,
                     after_vote=self._after_vote if self.canary is not None else None)

    async def _after_vote(self, interaction_id: int) -> None:
        if self.canary is not None:
            await self.canary.tick()

    @property
    def learned(self) -> LearnedAnswers:
        """The learned-answers workflow (escalation threads → drafts → review → the ``learned`` source)."""
        return LearnedAnswers(self.settings, self.db, self.redis)

    def answer_pipeline(self) -> AnswerPipeline:
        """The pipeline over this runtime's parts (a worker runtime: see :func:`build_runtime`)."""
        if self.retriever is None or self.engine is None or self.tracer is None:
            raise RuntimeError("this runtime was built without the answering parts (worker=False)")
        pipeline = AnswerPipeline(self.settings, self.db, self.interactions, self.retriever, self.engine, self.tracer,
                                  self.deliverers, self.after_answer, rewriter=self.rewriter)
        pipeline.canary = self.canary
        return pipeline

    async def aclose(self) -> None:
        for deliverer in self.deliverers.values():
            try:
                await deliverer.aclose()
            except Exception:  # noqa: BLE001
                log.exception("runtime.deliverer_close_failed")
        if isinstance(self.retriever, SearchProcess):
            await self.retriever.aclose()
        if self.engine is not None:
            await self.engine.close()
        if self.tracer is not None:
            self.tracer.shutdown()
        await self.redis.aclose()


async def build_runtime(settings: Settings, *, worker: bool) -> Runtime:
    db = get_database(settings.database_url_resolved())
    db.migrate()
    redis = await connect(settings)
    rt = Runtime(settings=settings, db=db, redis=redis, tracer=Tracer(settings))
    # every process may decide a canary: the worker after answers and by cron, the web process after votes
    rt.canary = CanaryGuard(settings, db, redis, AdminChannelNotifier(settings),
                            enqueue_shadow=lambda interaction_id: enqueue_shadow(redis, interaction_id))
    if worker:
        config = KnowledgeConfig.from_settings(settings)
        rt.store = IndexStore(config)
        await asyncio.to_thread(load_language_model)  # the asker's language, for the replies Deskmate words itself
        if settings.search_processes:  # the embedders and the index are loaded by the children, not here
            rt.retriever = SearchProcess(config, warm_kb=settings.kb_name, processes=settings.search_processes,
                                         setup=functools.partial(configure_logging, settings))
            await rt.retriever.start()
        else:
            one_blas_thread()  # the searches run in this process's threads
            rt.retriever = Retriever(rt.store)
            await asyncio.to_thread(rt.store.warm, settings.kb_name)
        rt.engine = AnswerEngine(settings, redis)
        rt.rewriter = QueryRewriter(settings, rt.engine.client, rt.engine.breaker)
        rt.guard = Guard(settings=settings, db=db, redis=redis, notifier=AdminChannelNotifier(settings))
        rt.after_answer.append(rt.guard.after_answer)
    return rt


def freeze_heap() -> int:
    """Take what a process loaded to serve (the index, the embedders, the SDKs, the app) out of the cyclic
    garbage collector's full collections; returns how many objects that is. Called once, by ``deskmate worker``
    and ``deskmate web`` when they are ready — not by library code or tests (a frozen object is never collected).

    Without it, each full collection walked the worker's ~450,000 long-lived objects and held the event loop for
    250–460 ms, several times a minute at 200 answers in flight (gc callbacks in ``bench/bench_pipeline.py``'s
    worker); with it, 10–55 ms. Objects made later are collected as usual."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()

