"""The components one process builds from its settings, shared by its jobs and request handlers.

Nothing here is a source of truth: the database and Redis are. A web process builds the light parts (database,
Redis); a worker also loads the embedder, the index and the LLM client — once per process, not per job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from arq.connections import ArqRedis

from bot.core.log import get_logger
from bot.core.settings import Settings
from bot.core.types import Answer, Platform
from bot.delivery import Deliverer
from bot.redis_conn import connect
from feedback.db import Database, get_database

log = get_logger(__name__)

AfterAnswerHook = Callable[["Runtime", int, Answer], Awaitable[None]]


@dataclass
class Runtime:
    settings: Settings
    db: Database
    redis: ArqRedis
    store: Any = None  # knowledge.index.IndexStore (worker)
    retriever: Any = None  # knowledge.retrieval.Retriever (worker)
    engine: Any = None  # bot.answering.AnswerEngine (worker)
    tracer: Any = None  # bot.tracing.Tracer (worker)
    deliverers: dict[Platform, Deliverer] = field(default_factory=dict)
    after_answer: list[AfterAnswerHook] = field(default_factory=list)

    async def aclose(self) -> None:
        for deliverer in self.deliverers.values():
            try:
                await deliverer.aclose()
            except Exception:  # noqa: BLE001
                log.exception("runtime.deliverer_close_failed")
        if self.engine is not None:
            await self.engine.close()
        if self.tracer is not None:
            self.tracer.shutdown()
        await self.redis.aclose()


async def build_runtime(settings: Settings, *, worker: bool) -> Runtime:
    db = get_database(settings.database_url_resolved())
    db.migrate()
    redis = await connect(settings)
    rt = Runtime(settings=settings, db=db, redis=redis)
    if worker:
        import asyncio

        from bot.answering import AnswerEngine
        from bot.tracing import Tracer
        from knowledge.index import IndexStore
        from knowledge.retrieval import Retriever

        rt.store = IndexStore(settings)
        rt.retriever = Retriever(rt.store)
        await asyncio.to_thread(warm_up, rt)
        rt.engine = AnswerEngine(settings, redis)
        rt.tracer = Tracer(settings)
        for register in _deliverer_factories():
            register(rt)
        for hook in _after_answer_hooks():
            rt.after_answer.append(hook)
    return rt


def warm_up(rt: Runtime) -> None:
    """Load the embedding model and the latest index now, so the first question is not the slow one."""
    rt.store.embedder.embed(["warm up"])
    try:
        rt.store.load(rt.settings.kb_name)
    except LookupError as exc:
        log.warning("runtime.no_index", kb=rt.settings.kb_name, error=str(exc))


def _deliverer_factories() -> list[Callable[[Runtime], None]]:
    """Chat surfaces that can deliver answers, each registering itself when it is configured."""
    factories: list[Callable[[Runtime], None]] = []
    try:
        from bot.slack.delivery import register as slack_register

        factories.append(slack_register)
    except ImportError:
        pass
    try:
        from bot.teams.delivery import register as teams_register

        factories.append(teams_register)
    except ImportError:
        pass
    return factories


def _after_answer_hooks() -> list[AfterAnswerHook]:
    try:
        from playbooks.guard import after_answer

        return [after_answer]
    except ImportError:
        return []
