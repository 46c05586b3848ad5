"""Reading an interaction back as the JSON the local chat page and the terminal chat show.

The status wording (labels, the error notice) is :mod:`bot.status_text`'s, as on Slack and Teams; a label is in
the language the answer was worded in. ``answer`` is the recorded text as is; ``text`` is what to show under
``label`` (an extractive answer's own leading label removed, since ``label`` says it). A source's ``location`` is a URL or a path below the source folder, never a
server path (:func:`knowledge.sources.display_location` cuts those stored by earlier indexes).

Local questions are recorded in channel ``local:<conversation>``; the web API reads an interaction only for
the conversation it belongs to (``conversation=``), and never another platform's.
"""

from __future__ import annotations

from typing import Any

from bot.core.types import Platform, Status
from bot.status_text import FAILURE_NOTICE, StatusLabel, answer_body, answer_language, status_label
from feedback.interactions import InteractionStore
from knowledge.sources import display_location


def label_view(label: StatusLabel | None) -> dict[str, Any] | None:
    if label is None:
        return None
    return {"icon": label.icon, "title": label.title, "detail": label.detail, "warning": label.warning}


def local_channel(conversation: str) -> str:
    return f"local:{conversation}"


def source_view(source: dict[str, Any]) -> dict[str, Any]:
    location = str(source.get("location") or "")
    return {**source, "location": display_location(location, str(source.get("doc_id") or ""))}


async def interaction_view(interactions: InteractionStore, interaction_id: int, *,
                           conversation: str | None = None) -> dict[str, Any] | None:
    """The interaction as JSON; None when there is none — or, with ``conversation``, when it is not a local
    question of that conversation (another conversation's, or a Slack or Teams one)."""
    row = await interactions.get(interaction_id)
    if row is None:
        return None
    if conversation is not None and (row.platform != Platform.LOCAL.value
                                     or row.channel != local_channel(conversation)):
        return None
    failed = row.status == Status.ERROR
    return {
        "interaction_id": row.id,
        "status": row.status,
        "question": row.question,
        "answer": row.answer,
        "text": answer_body(row.answer or "", fallback=row.fallback, fallback_reason=row.fallback_reason),
        "label": label_view(None if failed else status_label(row.status, fallback=row.fallback,
                                                              fallback_reason=row.fallback_reason,
                                                              language=answer_language(row.answer or ""))),
        "sources": [source_view(source) for source in row.sources],
        "fallback": row.fallback,
        "fallback_reason": row.fallback_reason,
        "release": row.release,
        "model": row.model,
        "latency_ms": row.latency_ms,
        "cost_usd": row.cost_usd,
        "error": FAILURE_NOTICE if failed else None,
    }
