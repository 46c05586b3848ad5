"""Labelled interactions as an evaluation dataset: every 👍/👎 with the question, passages, answer and citations.

One row per feedback row, i.e. per (answer, user): a user who changed their vote appears once, with their
latest label. Escalations without a vote (label ``none``) are not labels and are left out. ``--since`` filters
on the time of the vote (its last change).

Formats: JSON Lines (nested passages and citations) and CSV (one line per row; passages and citations as JSON
strings, plus ``cited_doc_ids`` for spreadsheets).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from datetime import date, datetime, time, timezone
from typing import IO, Any

from sqlmodel import col, select

from bot.core.types import Status
from feedback.db import Database
from feedback.models import Feedback, Interaction
from feedback.votes import LABELS

FORMATS = ("jsonl", "csv")
CSV_FIELDS = (
    "feedback_id", "interaction_id", "label", "reason", "comment", "escalated", "user_hash", "platform",
    "voted_at", "asked_at", "question", "answer", "status", "release", "model", "index_version", "fallback",
    "cited_doc_ids", "citations", "passages", "trace_id",
)
_MARKERS = re.compile(r"\s?\[\d+\]")


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive: they were written in UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def parse_since(text: str) -> datetime:
    """``2025-05-01`` (midnight UTC) or an ISO datetime (UTC unless it says otherwise)."""
    text = text.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=timezone.utc)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not a date or ISO datetime: {text!r}") from exc
    return as_utc(parsed)  # type: ignore[return-value]


def strip_markers(text: str) -> str:
    return _MARKERS.sub("", text or "").strip()


def citations_of(interaction: Interaction) -> list[dict[str, Any]]:
    """The sources an answer cites. A "not found" reply lists the closest sources, which are not citations."""
    if interaction.status != Status.ANSWERED:
        return []
    return [dict(s) for s in interaction.sources or []]


def row_of(feedback: Feedback, interaction: Interaction) -> dict[str, Any]:
    citations = citations_of(interaction)
    passages = [
        {"rank": rank, **{k: p.get(k) for k in ("doc_id", "chunk_id", "title", "heading", "location", "score",
                                                  "knowledge_set", "index_version", "text")}}
        for rank, p in enumerate(interaction.passages or [], start=1)
    ]
    voted_at, asked_at = as_utc(feedback.updated_at), as_utc(interaction.created_at)
    return {
        "feedback_id": feedback.id,
        "interaction_id": interaction.id,
        "label": feedback.label,
        "reason": feedback.reason,
        "comment": feedback.comment,
        "escalated": feedback.escalated,
        "user_hash": feedback.user_hash,  # already a salted hash (feedback.votes); never the platform id
        "platform": feedback.platform,
        "voted_at": voted_at.isoformat() if voted_at else None,
        "asked_at": asked_at.isoformat() if asked_at else None,
        "question": interaction.question,
        "answer": interaction.answer,
        "status": interaction.status,
        "release": interaction.release,
        "model": interaction.model,
        "index_version": interaction.index_version,
        "fallback": interaction.fallback,
        "cited_doc_ids": list(dict.fromkeys(c.get("doc_id") for c in citations if c.get("doc_id"))),
        "citations": citations,
        "passages": passages,
        "trace_id": interaction.trace_id,
    }


async def labelled_rows(db: Database, *, since: datetime | None = None, label: str | None = None,
                        limit: int | None = None) -> list[dict[str, Any]]:
    """Labelled interactions, oldest vote first."""
    if label is not None and label not in LABELS:
        raise ValueError(f"label must be one of {', '.join(LABELS)}")
    stmt = (
        select(Feedback, Interaction)
        .join(Interaction, col(Feedback.interaction_id) == col(Interaction.id))
        .where(col(Feedback.label).in_([label] if label else list(LABELS)))
        .order_by(col(Feedback.updated_at), col(Feedback.id))
    )
    if since is not None:
        stmt = stmt.where(col(Feedback.updated_at) >= as_utc(since))  # the column type stores UTC
    if limit:
        stmt = stmt.limit(limit)
    async with db.asession() as session:
        pairs = list((await session.exec(stmt)).all())
    return [row_of(fb, inter) for fb, inter in pairs]


def write_jsonl(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    n = 0
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        n += 1
    return n


def write_csv(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    writer = csv.DictWriter(out, fieldnames=list(CSV_FIELDS), extrasaction="ignore")
    writer.writeheader()
    n = 0
    for row in rows:
        flat = dict(row)
        flat["cited_doc_ids"] = ";".join(row["cited_doc_ids"])
        flat["citations"] = json.dumps(row["citations"], ensure_ascii=False)
        flat["passages"] = json.dumps(row["passages"], ensure_ascii=False)
        writer.writerow(flat)
        n += 1
    return n


def render(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    buffer = io.StringIO()
    (write_jsonl if fmt == "jsonl" else write_csv)(rows, buffer)
    return buffer.getvalue()
