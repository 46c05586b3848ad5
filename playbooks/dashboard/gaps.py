"""Knowledge gaps: the questions Deskmate could not answer, or answered to a 👎, grouped by similarity.

This is the list a documentation owner works from: each group shows how often it was asked, a few phrasings,
the 👎 reasons, and the sources retrieval did find (what was close, and evidently not enough).

Grouping embeds each distinct question once with the knowledge base's own embedder (loaded in the web process
only when the dashboard first asks for gaps) and puts two questions in one group when their cosine similarity
reaches ``EMBEDDING_THRESHOLD`` (single linkage: the result does not depend on the order questions came in). If
the embedder cannot be loaded it falls back to content-word overlap (Jaccard), which groups rephrasings less
well but needs nothing. At most ``MAX_QUESTIONS`` recent questions are grouped.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import or_
from sqlmodel import col, select

from bot.core.log import get_logger
from bot.core.settings import Settings
from bot.core.types import Status
from feedback.db import Database
from feedback.models import Feedback, Interaction
from knowledge.config import KnowledgeConfig
from knowledge.embedding import get_embedder
from playbooks.dashboard.data import Window, iso

log = get_logger(__name__)

EMBEDDING_THRESHOLD = 0.6  # MiniLM cosine: rephrasings of one question score ~0.6-0.9, other topics < 0.5
JACCARD_THRESHOLD = 0.4
MAX_QUESTIONS = 2000
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset("""a an and are as at be by can do does for from how i if in is it me my of on or our should the
to we what when where which who why will with you your there this that have has get any""".split())


@dataclass
class Asked:
    interaction_id: int
    question: str
    unanswered: bool
    downvoted: bool
    reasons: list[str]
    passages: list[dict[str, Any]]
    top_score: float | None
    at: str | None


@dataclass
class Group:
    members: list[Asked] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        phrasings = Counter(m.question.strip() for m in self.members)
        sources: Counter[tuple[str, str, str, str]] = Counter()
        for m in self.members:
            for p in m.passages[:3]:
                sources[(str(p.get("doc_id", "")), str(p.get("title", "")), str(p.get("heading", "")),
                         str(p.get("location", "")))] += 1
        scores = [m.top_score for m in self.members if m.top_score is not None]
        return {
            "label": phrasings.most_common(1)[0][0],
            "count": len(self.members),
            "unanswered": sum(m.unanswered for m in self.members),
            "downvoted": sum(m.downvoted for m in self.members),
            "questions": [q for q, _ in phrasings.most_common(5)],
            "reasons": dict(Counter(r for m in self.members for r in m.reasons if r).most_common()),
            "sources": [{"doc_id": d, "title": t, "heading": h, "location": loc, "count": c}
                        for (d, t, h, loc), c in sources.most_common(3)],
            "mean_top_score": round(sum(scores) / len(scores), 3) if scores else None,
            "last_asked": max((m.at for m in self.members if m.at), default=None),
            "interaction_ids": [m.interaction_id for m in self.members][:50],
        }


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1}


async def load_asked(db: Database, window: Window) -> list[Asked]:
    async with db.asession() as session:
        downs = (await session.exec(  # type: ignore[call-overload]
            select(Feedback.interaction_id, Feedback.reason)
            .join(Interaction, col(Interaction.id) == col(Feedback.interaction_id))
            .where(Feedback.label == "down", col(Interaction.answered_at) >= window.start))).all()
        reasons: dict[int, list[str]] = {}
        for iid, reason in downs:
            reasons.setdefault(iid, []).append(reason or "")
        rows = (await session.exec(
            select(Interaction)
            .where(col(Interaction.answered_at) >= window.start,
                   or_(col(Interaction.status) == Status.NOT_FOUND, col(Interaction.id).in_(list(reasons) or [-1])))
            .order_by(col(Interaction.id).desc()).limit(MAX_QUESTIONS))).all()
    return [Asked(interaction_id=r.id or 0, question=r.question, unanswered=r.status == Status.NOT_FOUND,
                  downvoted=(r.id in reasons), reasons=reasons.get(r.id or 0, []), passages=list(r.passages or []),
                  top_score=r.top_score, at=iso(r.answered_at)) for r in rows]


def normalized(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def _components(n: int, linked: Any) -> list[list[int]]:
    """Connected components of ``n`` items where ``linked(i, j)`` (single linkage: order never matters)."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if find(i) != find(j) and linked(i, j):
                parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def _group(asked: list[Asked], linked_unique: Any, uniques: list[str]) -> list[Group]:
    index = {u: k for k, u in enumerate(uniques)}
    members: dict[int, list[Asked]] = {}
    for item in asked:
        members.setdefault(index[normalized(item.question)], []).append(item)
    return [Group(members=[m for k in comp for m in members[k]]) for comp in _components(len(uniques), linked_unique)]


def unique_questions(asked: list[Asked]) -> list[str]:
    return list(dict.fromkeys(normalized(a.question) for a in asked))


def group_by_embedding(asked: list[Asked], uniques: list[str], vectors: Any,
                       threshold: float = EMBEDDING_THRESHOLD) -> list[Group]:
    """``vectors``: unit-length embeddings of ``uniques`` (the same question asked twice is embedded once)."""
    sims = np.asarray(vectors, dtype=np.float32) @ np.asarray(vectors, dtype=np.float32).T
    return _group(asked, lambda i, j: sims[i, j] >= threshold, uniques)


def group_by_words(asked: list[Asked], threshold: float = JACCARD_THRESHOLD) -> list[Group]:
    uniques = unique_questions(asked)
    words = [content_words(u) for u in uniques]

    def linked(i: int, j: int) -> bool:
        union = len(words[i] | words[j])
        return (len(words[i] & words[j]) / union if union else 1.0) >= threshold

    return _group(asked, linked, uniques)


def _embed(settings: Settings, texts: list[str]) -> Any:
    return get_embedder(KnowledgeConfig.from_settings(settings).embedding).embed(texts)


async def knowledge_gaps(db: Database, settings: Settings, window: Window, *, limit: int = 20,
                         method: str = "auto") -> dict[str, Any]:
    """Groups of unanswered / 👎 questions in ``window``, biggest first. ``method``: auto | embedding | words."""
    started = time.perf_counter()
    asked = await load_asked(db, window)
    used = "words"
    groups: list[Group] = []
    if asked and method in ("auto", "embedding"):
        try:
            uniques = unique_questions(asked)
            vectors = await asyncio.to_thread(_embed, settings, uniques)
            groups, used = group_by_embedding(asked, uniques, vectors), "embedding"
        except Exception as exc:  # noqa: BLE001 - gaps still show, grouped more coarsely
            if method == "embedding":
                raise
            log.warning("dashboard.gaps_embedding_failed", error=repr(exc)[:200])
    if asked and not groups:
        groups = group_by_words(asked)
    groups.sort(key=lambda g: (-len(g.members), -max(m.interaction_id for m in g.members)))
    return {"method": used, "questions": len(asked), "groups": [g.to_json() for g in groups[:limit]],
            "seconds": round(time.perf_counter() - started, 3)}
