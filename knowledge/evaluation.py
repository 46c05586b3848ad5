"""Retrieval evaluation at document level: recall@1/5/10 and MRR@10 for BM25, dense and hybrid.

A qrels file is JSONL with ``{"qid", "question", "relevant_doc_ids": [...]}``; items with no relevant
documents (unanswerable questions) are left out of retrieval metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowledge.retrieval import FusionConfig, Mode, Retriever

CUTOFFS = (1, 5, 10)


@dataclass
class QrelItem:
    qid: str
    question: str
    relevant: set[str]


def load_qrels(path: Path) -> list[QrelItem]:
    items: list[QrelItem] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            relevant = set(row.get("relevant_doc_ids") or [])
            if relevant:
                items.append(QrelItem(str(row.get("qid", number)), str(row["question"]), relevant))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a qrels line ({exc})") from exc
    return items


def ranked_doc_ids(retriever: Retriever, question: str, *, kb: str, mode: Mode, fusion: FusionConfig | None,
                   depth: int = 10, version: int | None = None) -> list[str]:
    """Documents in order of their best chunk (a document counts once)."""
    passages = retriever.search(question, kb=kb, version=version, k=depth * 4, candidates=max(40, depth * 4),
                                mode=mode, fusion=fusion)
    seen: list[str] = []
    for p in passages:
        if p.doc_id not in seen:
            seen.append(p.doc_id)
        if len(seen) == depth:
            break
    return seen


def score_ranking(ranking: list[str], relevant: set[str]) -> dict[str, float]:
    out = {f"recall@{c}": len(relevant & set(ranking[:c])) / len(relevant) for c in CUTOFFS}
    rr = 0.0
    for rank, doc_id in enumerate(ranking[:10], start=1):
        if doc_id in relevant:
            rr = 1.0 / rank
            break
    out["mrr@10"] = rr
    return out


def evaluate_retrieval(retriever: Retriever, items: list[QrelItem], *, kb: str,
                       fusion: FusionConfig | None = None, version: int | None = None,
                       modes: tuple[Mode, ...] = ("bm25", "dense", "hybrid")) -> dict[str, Any]:
    results: dict[str, Any] = {"n": len(items), "kb": kb}
    for mode in modes:
        totals: dict[str, float] = {}
        for item in items:
            ranking = ranked_doc_ids(retriever, item.question, kb=kb, mode=mode, fusion=fusion, version=version)
            for key, value in score_ranking(ranking, item.relevant).items():
                totals[key] = totals.get(key, 0.0) + value
        results[mode] = {key: round(value / max(1, len(items)), 4) for key, value in totals.items()}
    return results
