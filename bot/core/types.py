"""The platform-neutral types every layer shares: the question, the answer, its sources, usage and status.

Adapters (Slack, Teams, local chat) build a :class:`Question`, the worker produces an :class:`Answer`, and
renderers turn the answer into Block Kit, an Adaptive Card or text. Nothing platform-specific passes this line
except the opaque ``reply_target`` the adapter itself wrote.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class Platform(StrEnum):
    SLACK = "slack"
    TEAMS = "teams"
    LOCAL = "local"


class Question(BaseModel):
    """A question as the worker sees it, whatever surface it came from."""

    idempotency_key: str = Field(description="The platform's event/activity id; also the arq job id.")
    platform: Platform
    workspace: str = ""
    channel: str = ""
    thread: str = ""
    user: str = ""
    text: str
    channel_type: str = ""  # e.g. Slack's "im" / "channel", Teams' "personal" / "channel" / "groupChat"
    reply_target: dict[str, Any] = Field(
        default_factory=dict,
        description="Adapter-owned delivery data: placeholder ts, conversation reference, response_url…",
    )
    ephemeral: bool = False


class Status(StrEnum):
    """Where a question stands: pending → (answered | not_found | maintenance | error).

    The same values are an answer's outcome and the recorded interaction's status.
    """

    PENDING = "pending"  # recorded, waiting for (or in) the worker
    ANSWERED = "answered"
    NOT_FOUND = "not_found"  # the sources do not answer it: honest "I don't know"
    MAINTENANCE = "maintenance"  # kill-switch off: the maintenance reply
    ERROR = "error"

    @property
    def is_final(self) -> bool:
        return self is not Status.PENDING


#: Statuses after which a question is never answered again (a redelivered job is skipped).
FINAL_STATUSES: frozenset[str] = frozenset(s.value for s in Status if s.is_final)

#: The name of the score a 👍 (1) / 👎 (0) vote becomes on its answer's trace (Langfuse).
FEEDBACK_SCORE = "user_feedback"


class Source(BaseModel):
    """A numbered source shown under an answer."""

    number: int
    doc_id: str
    title: str
    location: str
    heading: str = ""
    quote: str = ""  # the span the answer cites, when known

    @property
    def label(self) -> str:
        return f"{self.title} › {self.heading}" if self.heading and self.heading != self.title else self.title


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


class Answer(BaseModel):
    """The worker's answer: text with ``[n]`` markers that refer to ``sources``."""

    interaction_id: int | None = None
    text: str
    sources: list[Source] = Field(default_factory=list)
    status: Status = Status.ANSWERED
    fallback: bool = False  # extractive: not written by the model
    fallback_reason: str | None = None
    release: str | None = None
    model: str | None = None
    latency_ms: dict[str, float] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    llm_latency_ms: float | None = Field(None, exclude=True)  # the model call alone, when there was one
    llm_slot_wait_ms: float | None = Field(None, exclude=True)  # waited for a model call to end first (llm_max_concurrent)
    error: str | None = Field(None, exclude=True)  # what went wrong with the model, when the answer fell back
    search_query: str | None = Field(None, exclude=True)  # what was searched (the message, or its rewrite)
