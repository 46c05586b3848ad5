"""Delivering an answer back to where the question came from.

Each chat surface registers a :class:`Deliverer` for its platform in the worker's runtime. The local chat needs
none: its page and the terminal read the recorded interaction.

A deliverer makes one attempt and either returns references to what it posted or raises :class:`DeliveryFailed`,
which says whether trying again can help (``retryable``: a 429, a 5xx or an HTML error page, a timeout, a refused
connection) and how long the platform asked us to wait (``retry_after_s``). Retrying — with backoff, until a
deadline, across restarts — is the pipeline's and the queue's job (:meth:`bot.pipeline.AnswerPipeline.deliver`),
not the deliverer's. An exception of any other type is treated as retryable.

Exactly once: retrying must not post twice. Updating the placeholder in place is idempotent; a new message is
posted only when the placeholder is gone (or there never was one), and the pipeline records the posted message's
id as soon as the deliverer returns it.
"""

from __future__ import annotations

from typing import Any, Protocol

from bot.core.types import Answer, Question


class DeliveryFailed(Exception):
    """One delivery attempt failed. ``retryable``: another attempt may succeed; ``retry_after_s``: the platform's
    ``Retry-After`` (seconds), when it sent one."""

    def __init__(self, error: str, *, retryable: bool, retry_after_s: float | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.retryable = retryable
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        kind = "retryable" if self.retryable else "permanent"
        after = f", retry after {self.retry_after_s:g} s" if self.retry_after_s is not None else ""
        return f"DeliveryFailed({self.error!r}, {kind}{after})"


class Deliverer(Protocol):
    async def deliver(self, question: Question, answer: Answer) -> dict[str, Any]:
        """Update the placeholder with the answer (or post it, if the placeholder is gone or there is none);
        return references to what was posted. Raises :class:`DeliveryFailed`."""
        ...

    async def deliver_failure(self, question: Question, message: str) -> dict[str, Any]:
        """Tell the user, in their thread, that answering failed (same contract as :meth:`deliver`)."""
        ...

    async def aclose(self) -> None: ...
