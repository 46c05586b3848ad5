"""What one answer's trace carries as trace-level attributes, within Langfuse's limits.

Langfuse drops a propagated value (user id, session id, tag, metadata value) longer than 200 characters, and
a session id that is not ASCII, so every value is clipped or hashed here before it reaches the SDK::

    attributes = TraceAttributes.of_answer(
        interaction_id=42, user_id="3f1c...", thread="1712345678.000200", platform="slack", release="r7"
    )
    with propagate_attributes(**attributes.propagated()):   # every span of the trace carries them
        ...
    root_span.set_attribute(TRACE_TAGS, [*attributes.tags, status_tag("answered")])

``user_id`` is already the pseudonym (:func:`bot.core.identity.hash_user`): the raw platform user id never
gets here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

#: Langfuse drops longer propagated values (user id, session id, tags, metadata values).
MAX_PROPAGATED_CHARS = 200
#: Room left for the quotes of a JSON-encoded metadata value.
_MAX_METADATA_CHARS = 190
TRACE_NAME = "answer"


def clip(value: str, limit: int = MAX_PROPAGATED_CHARS) -> str:
    return value[:limit]


def session_id(thread: str) -> str | None:
    """The thread as session id; hashed only where Langfuse would drop it (non-ASCII, over 200 chars)."""
    if not thread:
        return None
    if thread.isascii() and len(thread) <= MAX_PROPAGATED_CHARS:
        return thread
    return "thread-" + hashlib.sha256(thread.encode()).hexdigest()[:32]


def status_tag(status: str) -> str:
    """The ``status:`` tag added when the answer is delivered (``status:not_found`` lists knowledge gaps)."""
    return clip(f"status:{status}")


@dataclass(frozen=True)
class TraceAttributes:
    """The trace attributes of one answer, ready for ``langfuse.propagate_attributes``."""

    user_id: str | None
    session_id: str | None
    metadata: dict[str, Any]
    version: str | None
    tags: list[str]

    @classmethod
    def of_answer(
        cls,
        *,
        interaction_id: int | None,
        user_id: str | None,
        thread: str,
        platform: str,
        release: str | None,
    ) -> TraceAttributes:
        tags = [clip(f"platform:{platform}")] + ([clip(f"release:{release}")] if release else [])
        metadata: dict[str, Any] = {"platform": clip(platform, _MAX_METADATA_CHARS)}
        if interaction_id is not None:
            metadata["interaction_id"] = interaction_id
        if release:
            metadata["release"] = clip(release, _MAX_METADATA_CHARS)
        return cls(
            user_id=user_id or None,
            session_id=session_id(thread),
            metadata=metadata,
            version=clip(release) if release else None,
            tags=tags,
        )

    def propagated(self) -> dict[str, Any]:
        """Keyword arguments of ``langfuse.propagate_attributes``."""
        return {
            "user_id": self.user_id,
            "session_id": self.session_id,
            "metadata": self.metadata,
            "version": self.version,
            "tags": self.tags,
            "trace_name": TRACE_NAME,
        }
