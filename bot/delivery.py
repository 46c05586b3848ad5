"""Delivering an answer back to where the question came from.

Each chat surface registers a :class:`Deliverer` for its platform in the worker's runtime. The local chat needs
none: its page and the terminal read the recorded interaction.
"""

from __future__ import annotations

from typing import Any, Protocol

from bot.core.types import Answer, Question


class Deliverer(Protocol):
    async def deliver(self, question: Question, answer: Answer) -> dict[str, Any]:
        """Post (or update the placeholder with) the answer; return references to what was posted."""
        ...

    async def deliver_failure(self, question: Question, message: str) -> None:
        """Tell the user, in their thread, that answering failed."""
        ...

    async def aclose(self) -> None: ...
