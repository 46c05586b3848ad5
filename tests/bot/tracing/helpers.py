"""Shared by the tracing tests: a recording logger, settings for a fake Langfuse, and one recorded answer."""

from __future__ import annotations

import time
from typing import Any

from bot.core.settings import Settings
from bot.core.types import Usage
from bot.tracing import Tracer
from knowledge.passage import Passage
from tests.fakes.langfuse_server import FakeLangfuse

QUESTION = "How many vacation days do I get in my first year?"
ANSWER = "You get 25 vacation days per year [1]."
FEEDBACK_REASON = "exactly what I needed"
#: Not the default salt: the traced user id must come from the settings.
SALT = "tracing-test-salt"
USAGE = Usage(input_tokens=1200, output_tokens=85, cache_read_tokens=900, cache_write_tokens=300)


class RecordingLog:
    """Stands in for the tracing modules' structlog loggers: records (level, event, fields)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        def record(event: str, **fields: Any) -> None:
            self.events.append((level, event, fields))

        return record

    def at(self, level: str) -> list[tuple[str, dict[str, Any]]]:
        return [(event, fields) for lvl, event, fields in self.events if lvl == level]

    def text(self) -> str:
        return repr(self.events)


def settings_for(fake: FakeLangfuse | None = None, *, url: str | None = None) -> Settings:
    if fake is None:
        return Settings(
            _env_file=None, langfuse_public_key=None, langfuse_secret_key=None, user_hash_salt=SALT
        )
    return Settings(
        _env_file=None,
        langfuse_public_key=fake.public_key,
        langfuse_secret_key=fake.secret_key,
        langfuse_host=url or fake.url,
        user_hash_salt=SALT,
    )


def passages() -> list[Passage]:
    common: dict[str, Any] = dict(kb="default", knowledge_set="hr", location="hr/leave.md",
                                  text="Employees get 25 days.")
    return [
        Passage(chunk_id="leave#2", doc_id="hr/leave.md", title="Leave", heading="Vacation", score=0.83,
                index_version=4, dense_score=0.71, bm25_score=11.2, **common),
        Passage(chunk_id="leave#5", doc_id="hr/leave.md", title="Leave", heading="Carry-over", score=0.41,
                index_version=4, **common),
    ]


def record_answer(
    tracer: Tracer,
    *,
    interaction_id: int = 42,
    user: str = "U024BE7LH",
    thread: str = "1712345678.000200",
    question: str = QUESTION,
    fallback: bool = False,
) -> str | None:
    with tracer.answer_trace(
        interaction_id=interaction_id,
        question=question,
        user=user,
        thread=thread,
        platform="slack",
        release="r7",
    ) as trace:
        time.sleep(0.06)  # so the backdated children fit inside the root
        trace.retrieval(passages(), latency_ms=20.0, query=question)
        trace.generation(
            model="claude-sonnet-4-5",
            input_messages=[{"role": "user", "content": question}],
            output_text=ANSWER,
            usage=USAGE,
            cost_usd=0.0048,
            latency_ms=30.0,
            fallback=fallback,
        )
        trace.finish(ANSWER, "answered")
    return trace.trace_id
