"""What an evaluation needs from the bot: a way to answer a golden-set question as a given release would.

The runner (:mod:`feedback.evals.runner`) and the quality gate (:mod:`feedback.gate`) depend on this
:class:`Answerer` Protocol only. The bot provides the implementation (``bot.answerer``), which runs the same
retrieval and composition as the worker (the release's kb, index version, k, candidates, fusion, knowledge sets,
min score, model, prompt and max tokens), with no conversation history and no channel restriction beyond the
release's knowledge sets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from bot.core.types import Source, Status, Usage
from feedback.models import Release
from knowledge.passage import Passage


@dataclass
class EvalAnswer:
    """One answer as the runner scores it."""

    text: str
    status: Status
    sources: list[Source] = field(default_factory=list)
    #: What retrieval returned, best first (the runner scores retrieval on their doc ids).
    passages: list[Passage] = field(default_factory=list)
    fallback: bool = False
    fallback_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    #: Milliseconds per stage: ``retrieve`` and ``generate``.
    latency_ms: dict[str, float] = field(default_factory=dict)


class Answerer(Protocol):
    """Answers questions through a release's real pipeline."""

    async def warm_up(self, release: Release) -> None:
        """Load the embedder and the release's index before anything is timed.

        Raises :class:`knowledge.index.IndexNotFound` when the release cannot answer here.
        """
        ...

    async def answer(self, question: str, release: Release, *, allow_llm: bool) -> EvalAnswer:
        """``question`` answered as ``release`` would (``allow_llm`` False: the extractive fallback only)."""
        ...
