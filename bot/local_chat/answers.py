"""Reading an interaction back as the JSON the local chat page and the terminal chat show.

The status wording (labels, the error notice) is :mod:`bot.status_text`'s, as on Slack and Teams. ``answer`` is
the recorded text as is; ``text`` is what to show under ``label`` (an extractive answer's own leading label
removed, since ``label`` says it).
"""

from __future__ import annotations

from typing import Any

from bot.core.types import Status
from bot.status_text import FAILURE_NOTICE, StatusLabel, answer_body, status_label
from feedback.interactions import InteractionStore


def label_view(label: StatusLabel | None) -> dict[str, Any] | None:
    if label is None:
        return None
    return {"icon": label.icon, "title": label.title, "detail": label.detail, "warning": label.warning}


async def interaction_view(interactions: InteractionStore, interaction_id: int) -> dict[str, Any] | None:
    row = await interactions.get(interaction_id)
    if row is None:
        return None
    failed = row.status == Status.ERROR
    return {
        "interaction_id": row.id,
        "status": row.status,
        "question": row.question,
        "answer": row.answer,
        "text": answer_body(row.answer or "", fallback=row.fallback, fallback_reason=row.fallback_reason),
        "label": label_view(None if failed else status_label(row.status, fallback=row.fallback,
                                                              fallback_reason=row.fallback_reason)),
        "sources": row.sources,
        "fallback": row.fallback,
        "fallback_reason": row.fallback_reason,
        "release": row.release,
        "model": row.model,
        "latency_ms": row.latency_ms,
        "cost_usd": row.cost_usd,
        "error": FAILURE_NOTICE if failed else None,
    }
