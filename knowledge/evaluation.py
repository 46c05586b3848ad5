"""Retrieval evaluation at document level: recall@1/5/10 and MRR@10 for BM25, dense and hybrid.

A qrels file is JSONL with ``{"qid", "question", "relevant_doc_ids": [...]}``; items with no relevant
documents (unanswerable questions) are left out of the ranking metrics and count only for the "not found"
figures: how many answerable questions the hybrid search would decline (wrongly "not found") and how many
unanswerable ones it would let through to an answer, at a calibrated ``not_found_level``
(:func:`knowledge.retrieval.relevant_enough`). Optional per item:

- ``history``: the conversation before the question, ``[{"role": "user"|"assistant", "text": "..."}]``; the
  question is then searched the way the worker's offline path searches it (:func:`knowledge.query.offline_query`),
  unless ``use_history`` is off (the turn alone) or a ``query_field`` names another field to search instead
  (e.g. ``standalone``: a hand-written standalone version, for comparison);
- ``lang``: the question's language; with more than one language the results are also given per language;
- ``corpus``: which corpus the item belongs to (``--corpus`` keeps one); any other field can group results.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowledge.calibration import DEFAULT_NOT_FOUND_LEVEL
from knowledge.passage import Passage
from knowledge.query import ChatTurn, offline_query
from knowledge.retrieval import FusionConfig, Mode, Retriever, relevant_enough

CUTOFFS = (1, 5, 10)
MODES: tuple[Mode, ...] = ("bm25", "dense", "hybrid")


@dataclass
class QrelItem:
    qid: str
    question: str
    relevant: set[str]
    history: list[ChatTurn] = field(default_factory=list)
    lang: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # the whole line, for query_field and grouping


def _history(value: Any) -> list[ChatTurn]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError("history must be a list of {role, text}")
    turns: list[ChatTurn] = []
    for turn in value:
        role, text = turn["role"], turn["text"]
        if role == "user":
            turns.append(ChatTurn(role="user", text=str(text)))
        elif role == "assistant":
            turns.append(ChatTurn(role="assistant", text=str(text)))
        else:
            raise ValueError(f"history role must be user or assistant, not {role!r}")
    return turns


def load_qrels(path: Path, *, corpus: str | None = None, unanswerable: bool = False) -> list[QrelItem]:
    """The answerable items of a qrels file, and the unanswerable ones too with ``unanswerable`` (of ``corpus``
    only, when given: items naming another are skipped)."""
    items: list[QrelItem] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if corpus is not None and row.get("corpus", corpus) != corpus:
                continue
            relevant = set(row.get("relevant_doc_ids") or [])
            if relevant or unanswerable:
                lang = row.get("lang")
                items.append(QrelItem(str(row.get("qid", number)), str(row["question"]), relevant,
                                      history=_history(row.get("history")),
                                      lang=str(lang) if lang else None, fields=dict(row)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{number}: not a qrels line ({exc})") from exc
    return items


def item_query(item: QrelItem, *, vocabulary: Mapping[str, int] | None, use_history: bool = True,
               query_field: str | None = None) -> str:
    """What is searched for ``item``: its ``query_field``; or the question with its history, built exactly as the
    worker's offline path builds it; or (``use_history`` off) the question alone."""
    return item_queries(item, vocabulary=vocabulary, use_history=use_history, query_field=query_field)[0]


def item_queries(item: QrelItem, *, vocabulary: Mapping[str, int] | None, use_history: bool = True,
                 query_field: str | None = None) -> tuple[str, str | None]:
    """:func:`item_query`, and the alternative query the worker also searches (None when there is none)."""
    if query_field is not None:
        value = item.fields.get(query_field)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"item {item.qid} has no {query_field!r} text")
        return value, None
    if not use_history:
        return item.question, None
    query = offline_query(item.question, item.history, vocabulary=vocabulary)
    return query.text, query.alternative


def ranked_doc_ids(retriever: Retriever, question: str, *, kb: str, mode: Mode, fusion: FusionConfig | None,
                   depth: int = 10, version: int | None = None) -> list[str]:
    """Documents in order of their best chunk (a document counts once)."""
    return doc_ids(_search(retriever, question, kb=kb, mode=mode, fusion=fusion, depth=depth, version=version),
                   depth)


def _search(retriever: Retriever, question: str, *, kb: str, mode: Mode, fusion: FusionConfig | None,
            depth: int, version: int | None, alternative: str | None = None) -> list[Passage]:
    return retriever.search(question, kb=kb, version=version, k=depth * 4, candidates=max(40, depth * 4),
                            mode=mode, fusion=fusion, alternative=alternative)


def doc_ids(passages: list[Passage], depth: int = 10) -> list[str]:
    """Documents in order of their best chunk (a document counts once), at most ``depth``."""
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


def _average(rows: list[dict[str, float]]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for row in rows:
        for key, value in row.items():
            totals[key] = totals.get(key, 0.0) + value
    return {key: round(value / max(1, len(rows)), 4) for key, value in totals.items()}


def evaluate_retrieval(retriever: Retriever, items: list[QrelItem], *, kb: str,
                       fusion: FusionConfig | None = None, version: int | None = None,
                       modes: tuple[Mode, ...] = MODES, use_history: bool = True,
                       query_field: str | None = None, group_by: str | None = None,
                       not_found_level: float | None = DEFAULT_NOT_FOUND_LEVEL,
                       min_score: float = 0.3) -> dict[str, Any]:
    """Mean metrics per retrieval mode over the answerable items (``results[mode]``);
    ``results["groups"][value][mode]`` per value of ``group_by`` (a field of the items' lines) or, with more than
    one language present, per ``lang``; ``results["not_found"]`` (and per group): how many answerable items the
    hybrid search declines and how many unanswerable ones it answers at ``not_found_level`` (None: on the raw
    cosine ``min_score``, as releases made before the calibration decide)."""
    vocabulary = retriever.vocabulary(kb, version)
    queries = [item_queries(item, vocabulary=vocabulary, use_history=use_history, query_field=query_field)
               for item in items]
    answerable = [i for i, item in enumerate(items) if item.relevant]
    results: dict[str, Any] = {"n": len(answerable), "kb": kb,
                               "query": query_field or ("history" if use_history else "alone")}
    scores: dict[str, list[dict[str, float]]] = {}
    answered: list[bool] = []
    for mode in modes:
        searched = [_search(retriever, query, kb=kb, mode=mode, fusion=fusion, depth=10, version=version,
                            alternative=alternative)
                    if mode == "hybrid" or item.relevant else []
                    for item, (query, alternative) in zip(items, queries)]
        scores[mode] = [score_ranking(doc_ids(searched[i]), items[i].relevant) for i in answerable]
        results[mode] = _average(scores[mode])
        if mode == "hybrid":
            answered = [bool(p) and relevant_enough(p, level=not_found_level, min_score=min_score) for p in searched]
    if answered:
        results["not_found"] = _not_found(items, answered, range(len(items)), not_found_level)
    if group_by is None and len({item.lang for item in items}) > 1:
        group_by = "lang"
    if group_by is not None:
        results["group_by"] = group_by
        values = [str(item.fields.get(group_by) or "-") for item in items]
        results["groups"] = {}
        for value in sorted(set(values)):
            members = [i for i, v in enumerate(values) if v == value]
            ranked = [answerable.index(i) for i in members if i in answerable]
            group: dict[str, Any] = {"n": len(ranked),
                                     **{mode: _average([scores[mode][j] for j in ranked]) for mode in modes}}
            if answered:
                group["not_found"] = _not_found(items, answered, members, not_found_level)
            results["groups"][value] = group
    return results


def _not_found(items: list[QrelItem], answered: list[bool], members: Any, level: float | None) -> dict[str, Any]:
    ids = list(members)
    answerable = [i for i in ids if items[i].relevant]
    unanswerable = [i for i in ids if not items[i].relevant]
    return {"level": level, "answerable": len(answerable),
            "declined": sum(1 for i in answerable if not answered[i]),
            "unanswerable": len(unanswerable), "answered": sum(1 for i in unanswerable if answered[i])}
