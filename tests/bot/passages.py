"""Handbook-like passages for the answer-layer tests."""

from __future__ import annotations

from knowledge.passage import Passage


def passage(n: int, title: str, heading: str, text: str, score: float) -> Passage:
    slug = title.lower().replace(" ", "-")
    return Passage(
        chunk_id=f"{slug}-{n}",
        doc_id=slug,
        kb="default",
        knowledge_set="handbook",
        title=title,
        location=f"https://intranet.example.com/{slug}#{heading.lower().replace(' ', '-')}",
        heading=heading,
        text=text,
        score=score,
        index_version=3,
    )
