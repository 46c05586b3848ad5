"""Reading an interaction back as the JSON the local chat page and the terminal chat show."""

from __future__ import annotations

from typing import Any

from feedback.db import Database
from feedback.models import Interaction


async def interaction_view(db: Database, interaction_id: int) -> dict[str, Any] | None:
    async with db.asession() as session:
        row = await session.get(Interaction, interaction_id)
    if row is None:
        return None
    return {
        "interaction_id": row.id,
        "status": row.status,
        "question": row.question,
        "answer": row.answer,
        "sources": row.sources,
        "fallback": row.fallback,
        "fallback_reason": row.fallback_reason,
        "release": row.release,
        "model": row.model,
        "latency_ms": row.latency_ms,
        "cost_usd": row.cost_usd,
        "error": "Sorry — something went wrong while answering." if row.status == "error" else None,
    }
