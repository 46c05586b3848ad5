"""Helpers for feedback tests: answered interactions written straight to the database, a small golden set."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.answerer import evaluation_answerer
from bot.core.clock import utcnow
from bot.core.settings import Settings
from feedback.db import Database
from feedback.evals.runner import EvalResult, run_eval
from feedback.gate import GateReport, check_promotion, evaluate_gate
from feedback.models import Interaction

#: A golden set small enough for many eval runs: three answerable items, two unanswerable.
SMALL_GOLDEN = [
    {"qid": "t1", "question": "whats the per diem in the US", "relevant_doc_ids": ["travel/per-diem"],
     "answer": "USD 80 for a full day; 75% of that on the departure and return days.", "answerable": True},
    {"qid": "t2", "question": "how many weeks of parental leave do I get",
     "relevant_doc_ids": ["people/parental-leave"],
     "answer": "The primary caregiver gets 20 weeks at full pay and the secondary caregiver 12 weeks, after 6 months "
               "at Northwind.", "answerable": True},
    {"qid": "t3", "question": "vpn not working", "relevant_doc_ids": ["it/vpn"],
     "answer": "Work through the NorthGate troubleshooting steps; if it still fails open a Beacon ticket of type "
               "VPN / network.", "answerable": True},
    {"qid": "t4", "question": "What is the capital of Australia?", "relevant_doc_ids": [], "answer": "",
     "answerable": False},
    {"qid": "t5", "question": "Who won the 1998 football world cup?", "relevant_doc_ids": [], "answer": "",
     "answerable": False},
]


def write_golden(path: Path, rows: list[dict[str, Any]] = SMALL_GOLDEN) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


async def add_interaction(db: Database, *, question: str = "whats the per diem in the US", status: str = "answered",
                          answer: str = "USD 80 a day [1].", cited: tuple[str, ...] = ("travel/per-diem",),
                          release: str = "initial", trace_id: str | None = None, platform: str = "slack",
                          fallback: bool = False, created_at: datetime | None = None) -> int:
    row = Interaction(
        idempotency_key=f"test:{uuid.uuid4().hex}", platform=platform, channel="C1", thread="t1", user_hash="u",
        question=question, status=status, answer=answer, release=release, model="claude-sonnet-5-5",
        index_version=1, fallback=fallback, trace_id=trace_id,
        sources=[{"number": n, "doc_id": d, "title": d.split("/")[-1].title(), "location": f"{d}.md", "heading": "",
                  "quote": ""} for n, d in enumerate(cited, start=1)],
        passages=[{"doc_id": d, "chunk_id": f"{d}#0", "title": d, "heading": "", "location": f"{d}.md",
                   "score": 0.9, "knowledge_set": d.split("/")[0], "index_version": 1, "kb": "default",
                   "text": f"text of {d}"} for d in cited],
        created_at=created_at or utcnow(), answered_at=created_at or utcnow(),
    )
    async with db.asession() as session:
        session.add(row)
        await session.commit()
        await session.refresh(row)
    assert row.id is not None
    return row.id


# --- evaluations through the bot's pipeline (what `deskmate eval …` does) -------------------------------------
async def evaluate(settings: Settings, dataset: Path, releases: list[str | None], **kwargs: Any) -> list[EvalResult]:
    async with evaluation_answerer(settings) as answerer:
        return await run_eval(answerer, settings, dataset, releases, **kwargs)


async def gate_report(settings: Settings, candidate: str, **kwargs: Any) -> GateReport:
    async with evaluation_answerer(settings) as answerer:
        return await evaluate_gate(answerer, settings, candidate, **kwargs)


async def promotion_check(settings: Settings, candidate: str) -> tuple[bool, str]:
    async with evaluation_answerer(settings) as answerer:
        return await check_promotion(answerer, settings, candidate)
