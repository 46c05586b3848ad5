"""Golden sets: hand-written (and feedback-promoted) questions with their relevant pages and reference answers.

A golden set is JSON Lines, one item per line (see ``feedback/golden/README.md``)::

    {"qid": "s001", "question": "vpn not working", "relevant_doc_ids": ["it/vpn"],
     "answer": "Work through the NorthGate troubleshooting steps: ...", "answerable": true}

Items promoted from feedback carry extra, optional fields: ``origin`` (``feedback:up`` / ``feedback:down``),
``interaction_id``, and for 👎 questions ``regression: true`` with the ``rejected_answer`` (and its
``rejected_status``) and ``rejected_doc_ids`` people voted down. A 👎 question has no reference yet: it is ``needs_review`` with
``answerable: null`` until someone writes one, and meanwhile only counts towards the regression metric
(a release must not give the rejected answer again).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedback.evals.metrics import clean_answer

#: The bundled golden set for the sample knowledge base (knowledge/sample/).
SAMPLE_GOLDEN = Path(__file__).resolve().parent / "golden" / "sample.jsonl"

_KNOWN_FIELDS = {"qid", "question", "relevant_doc_ids", "answer", "answerable", "origin", "interaction_id",
                 "regression", "needs_review", "rejected_answer", "rejected_status", "rejected_doc_ids", "reason",
                 "notes"}
#: What a rejected reply may have been: an answer (model or excerpt) or a "not found" reply.
REJECTED_STATUSES = ("answered", "not_found")


class GoldenError(ValueError):
    """A golden set that cannot be used, with every problem found (file:line: message)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class GoldenItem:
    qid: str
    question: str
    relevant_doc_ids: list[str] = field(default_factory=list)
    answer: str = ""
    answerable: bool | None = True
    origin: str = ""
    interaction_id: int | None = None
    regression: bool = False
    needs_review: bool = False
    rejected_answer: str = ""
    rejected_status: str = ""  # "answered" or "not_found"; empty in items promoted before it was recorded
    rejected_doc_ids: list[str] = field(default_factory=list)
    reason: str | None = None
    notes: str = ""

    @property
    def scored(self) -> bool:
        """Has a reference (answerable known): counts in retrieval, citation, answer and abstention metrics."""
        return self.answerable is not None and not self.needs_review

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"qid": self.qid, "question": self.question, "relevant_doc_ids": self.relevant_doc_ids,
                               "answer": self.answer, "answerable": self.answerable}
        for key in ("origin", "interaction_id", "reason", "notes"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.regression:
            out.update(regression=True, rejected_answer=self.rejected_answer, rejected_doc_ids=self.rejected_doc_ids)
            if self.rejected_status:
                out["rejected_status"] = self.rejected_status
        if self.needs_review:
            out["needs_review"] = True
        return out


def _problems_of(row: Any) -> list[str]:
    if not isinstance(row, dict):
        return ["not a JSON object"]
    problems: list[str] = []
    if not isinstance(row.get("qid"), str) or not row["qid"].strip():
        problems.append("qid must be a non-empty string")
    if not isinstance(row.get("question"), str) or not row["question"].strip():
        problems.append("question must be a non-empty string")
    docs = row.get("relevant_doc_ids", [])
    if not isinstance(docs, list) or not all(isinstance(d, str) and d for d in docs):
        problems.append("relevant_doc_ids must be a list of doc ids")
        docs = []
    if not isinstance(row.get("answer", ""), str):
        problems.append("answer must be a string")
    answerable = row.get("answerable")
    needs_review = bool(row.get("needs_review"))
    if answerable is None and not needs_review:
        problems.append("answerable must be true or false (null only with needs_review)")
    elif answerable is not None and not isinstance(answerable, bool):
        problems.append("answerable must be true or false")
    if answerable is True and not needs_review:
        if not docs:
            problems.append("an answerable item needs relevant_doc_ids")
        if not str(row.get("answer") or "").strip():
            problems.append("an answerable item needs a reference answer")
    if answerable is False and docs:
        problems.append("an unanswerable item has no relevant_doc_ids")
    if row.get("regression") and not str(row.get("rejected_answer") or "").strip():
        problems.append("a regression item needs the rejected_answer")
    if row.get("rejected_status") not in (None, "", *REJECTED_STATUSES):
        problems.append(f"rejected_status must be one of {', '.join(REJECTED_STATUSES)}")
    unknown = set(row) - _KNOWN_FIELDS
    if unknown:
        problems.append(f"unknown fields: {', '.join(sorted(unknown))}")
    return problems


def item_from_dict(row: dict[str, Any]) -> GoldenItem:
    return GoldenItem(
        qid=row["qid"].strip(), question=row["question"].strip(), relevant_doc_ids=list(row.get("relevant_doc_ids") or []),
        answer=str(row.get("answer") or ""), answerable=row.get("answerable"), origin=str(row.get("origin") or ""),
        interaction_id=row.get("interaction_id"), regression=bool(row.get("regression")),
        needs_review=bool(row.get("needs_review")), rejected_answer=str(row.get("rejected_answer") or ""),
        rejected_status=str(row.get("rejected_status") or ""),
        rejected_doc_ids=list(row.get("rejected_doc_ids") or []), reason=row.get("reason"),
        notes=str(row.get("notes") or ""),
    )


def parse_golden(text: str, *, source: str = "<golden>") -> list[GoldenItem]:
    """Items of a golden set; raises :class:`GoldenError` listing every invalid line and duplicate qid."""
    items: list[GoldenItem] = []
    problems: list[str] = []
    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{source}:{number}: not JSON ({exc.msg})")
            continue
        found = _problems_of(row)
        if found:
            problems.extend(f"{source}:{number}: {p}" for p in found)
            continue
        item = item_from_dict(row)
        if item.qid in lines:
            problems.append(f"{source}:{number}: duplicate qid {item.qid!r} (first on line {lines[item.qid]})")
            continue
        lines[item.qid] = number
        items.append(item)
    if not items and not problems:
        problems.append(f"{source}: no items")
    if problems:
        raise GoldenError(problems)
    return items


def load_golden(path: Path | str) -> list[GoldenItem]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GoldenError([f"{path}: cannot read ({exc.strerror or exc})"]) from exc
    return parse_golden(text, source=str(path))


def write_golden(path: Path, items: list[GoldenItem], *, append: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", encoding="utf-8") as fh:
        for item in items:
            fh.write(json.dumps(item.to_dict(), ensure_ascii=False) + "\n")


def summary(items: list[GoldenItem]) -> dict[str, int]:
    counts = Counter("unanswerable" if i.answerable is False else "answerable" if i.scored else "needs_review"
                     for i in items)
    return {"items": len(items), "answerable": counts["answerable"], "unanswerable": counts["unanswerable"],
            "needs_review": counts["needs_review"], "regression": sum(i.regression for i in items)}


def check_doc_ids(items: list[GoldenItem], known_doc_ids: set[str]) -> list[str]:
    """Problems for relevant doc ids the index does not contain (a renamed or deleted page)."""
    return [f"{i.qid}: unknown doc id {d!r}" for i in items for d in i.relevant_doc_ids if d not in known_doc_ids]


_WS = re.compile(r"\s+")


def normalized_question(text: str) -> str:
    return _WS.sub(" ", text.lower()).strip(" ?!.")


# --- promotion from feedback -----------------------------------------------------------------------------
@dataclass
class Promotion:
    added: list[GoldenItem] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason → count

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def promote_feedback(rows: list[dict[str, Any]], existing: list[GoldenItem]) -> Promotion:
    """Golden items from labelled answers (rows of :func:`feedback.export.labelled_rows`).

    Votes are grouped per answer; the majority label decides (a tie is skipped). A 👍 answer becomes a
    reference answer (its cited documents the relevant ones); a 👍 on a "not found" reply becomes an
    unanswerable item; a 👎 question becomes a regression item (``needs_review``: someone writes the reference)
    that keeps the rejected answer, so a release giving it again is caught. Questions already in the set are
    skipped.
    """
    result = Promotion()
    seen = {normalized_question(i.question) for i in existing}
    qids = {i.qid for i in existing}
    by_answer: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_answer.setdefault(row["interaction_id"], []).append(row)
    for interaction_id, votes in by_answer.items():
        first = votes[0]
        ups = sum(v["label"] == "up" for v in votes)
        downs = len(votes) - ups
        qid = f"fb{interaction_id}"
        if ups == downs:
            result.skip("votes tied")
            continue
        if normalized_question(first["question"]) in seen or qid in qids:
            result.skip("already in the set")
            continue
        status = first.get("status")
        if status not in ("answered", "not_found") or not first.get("answer"):
            result.skip("no answer recorded")
            continue
        if ups > downs:
            if status == "not_found":
                item = GoldenItem(qid=qid, question=first["question"], relevant_doc_ids=[], answer="",
                                  answerable=False, origin="feedback:up", interaction_id=interaction_id,
                                  notes="👍 on a 'not found' reply: promoted as unanswerable")
            else:
                cited = list(first.get("cited_doc_ids") or [])
                item = GoldenItem(qid=qid, question=first["question"], relevant_doc_ids=cited,
                                  answer=clean_answer(first["answer"]), answerable=True, origin="feedback:up",
                                  interaction_id=interaction_id, needs_review=not cited,
                                  notes="reference is an extractive excerpt" if first.get("fallback") else "")
        else:
            reasons = [v.get("reason") for v in votes if v["label"] == "down" and v.get("reason")]
            item = GoldenItem(qid=qid, question=first["question"], relevant_doc_ids=[], answer="", answerable=None,
                              origin="feedback:down", interaction_id=interaction_id, regression=True,
                              needs_review=True, rejected_answer=first["answer"], rejected_status=status,
                              rejected_doc_ids=list(first.get("cited_doc_ids") or []),
                              reason=max(set(reasons), key=reasons.count) if reasons else None)
        seen.add(normalized_question(item.question))
        qids.add(qid)
        result.added.append(item)
    return result
