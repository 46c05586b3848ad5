"""The dashboard's learned answers: escalations, drafts waiting for review (approve / edit / reject here too),
approved answers and how often each has been cited since it was approved; and the link from a knowledge gap to
the draft made of one of its questions (docs/learned-answers.md).

A review from the dashboard goes through :class:`playbooks.learned.LearnedAnswers` like one from Slack or Teams:
the dashboard token holder reviews as an admin; a signed-in (SSO) user must be a knowledge owner of the answer's
set or an admin, by the id the SSO header gives. Every decision is written to the audit log.
"""

from __future__ import annotations

from html import escape
from typing import Any

from bot.core.settings import Settings
from feedback.db import Database
from feedback.learned import APPROVED, DRAFT, EXPIRED, REJECTED, LearnedAnswer
from feedback.models import AuditEntry
from playbooks.dashboard.data import Window, iso
from playbooks.dashboard.html import table
from playbooks.learned import LearnedAnswers, ReviewRefused

PLATFORM = "dashboard"
TEXT_PREVIEW = 400


def _row(row: LearnedAnswer, cited: int | None = None) -> dict[str, Any]:
    return {"id": row.id, "status": row.status, "question": row.question, "answer": row.answer,
            "answered_by": row.answered_by, "origin": row.origin, "platform": row.platform,
            "knowledge_set": row.knowledge_set, "public": row.public, "thread_url": row.thread_url,
            "interaction_id": row.interaction_id, "edited": row.edited, "reviewed_by": row.reviewed_by,
            "created_at": iso(row.created_at), "approved_at": iso(row.approved_at), "review_by": iso(row.review_by),
            "doc_id": row.doc_id, "indexed_version": row.indexed_version, "cited": cited}


async def learned_view(db: Database, settings: Settings, window: Window) -> dict[str, Any]:
    """Counts, the drafts waiting (and answers due for review), the approved answers with their citations."""
    learned = LearnedAnswers(settings, db)
    counts = await learned.store.counts(since=window.start)
    waiting = await learned.store.with_status(DRAFT, EXPIRED)
    approved = await learned.store.with_status(APPROVED)
    cited = await learned.store.citations(approved)
    return {"enabled": settings.learned_answers, "counts": counts,
            "waiting": [_row(r) for r in waiting], "approved": [_row(r, cited.get(r.id or 0, 0)) for r in approved]}


async def link_gaps(db: Database, settings: Settings, gaps: dict[str, Any]) -> dict[str, Any]:
    """``gaps`` with, per group, the learned answers made of its questions (``learned``: id and status)."""
    ids = [i for g in gaps.get("groups", []) for i in g.get("interaction_ids", [])]
    made = await LearnedAnswers(settings, db).store.for_interactions(ids)
    groups = []
    for group in gaps.get("groups", []):
        found = {made[i].id: made[i].status for i in group.get("interaction_ids", []) if i in made}
        groups.append({**group, "learned": [{"id": k, "status": v} for k, v in found.items()]})
    return {**gaps, "groups": groups}


def gap_links(group: dict[str, Any]) -> str:
    """The knowledge-gaps view's link from a gap to its draft(s)."""
    links = [f'<a href="#learned-{int(item["id"])}">learned answer #{int(item["id"])}</a> ({escape(item["status"])})'
             for item in group.get("learned", [])]
    return f'<br><span class="learned-link">{", ".join(links)}</span>' if links else ""


def _when(value: str | None) -> str:
    return escape((value or "")[:16].replace("T", " "))


def learned_html(view: dict[str, Any], csrf: str, days: int) -> str:
    counts = view["counts"]
    kpis = [("escalations", counts["escalations"]), ("drafts waiting", counts[DRAFT] + counts[EXPIRED]),
            ("approved", counts[APPROVED]), ("rejected", counts[REJECTED])]
    kpi_html = "".join(f'<div class="kpi" id="kpi-learned-{k.replace(" ", "-")}"><span class="muted">{escape(k)}</span>'
                       f"<b>{v}</b></div>" for k, v in kpis)
    note = "" if view["enabled"] else '<p class="muted">Learned answers are off (DESKMATE_LEARNED_ANSWERS).</p>'
    waiting_rows = []
    for r in view["waiting"]:
        link = f' <a href="{escape(r["thread_url"])}">thread</a>' if r["thread_url"] else ""
        form = (f'<form method="post" action="/dashboard/actions/learned" class="review">'
                f'<input type="hidden" name="csrf" value="{escape(csrf)}"><input type="hidden" name="days" value="{days}">'
                f'<input type="hidden" name="id" value="{r["id"]}">'
                f'<textarea name="text" rows="4" cols="48" aria-label="answer">{escape(r["answer"])}</textarea><br>'
                '<button name="decision" value="approve">Approve</button> '
                '<button name="decision" value="edit">Save edit &amp; approve</button> '
                '<button name="decision" value="reject">Reject</button></form>')
        waiting_rows.append([f'<span id="learned-{r["id"]}">#{r["id"]}</span> {escape(r["status"])}',
                             escape(r["question"]), form,
                             f'{escape(r["answered_by"])} ({escape(r["origin"])}, {escape(r["platform"])}){link}',
                             f'{escape(r["knowledge_set"])}, {"public" if r["public"] else "restricted"}',
                             _when(r["created_at"])])
    approved_rows = [[f'<span id="learned-{r["id"]}">#{r["id"]}</span>', escape(r["question"]),
                      escape(r["answer"][:TEXT_PREVIEW]) + ("…" if len(r["answer"]) > TEXT_PREVIEW else ""),
                      str(r["cited"]), f'{escape(r["knowledge_set"])}, {"public" if r["public"] else "restricted"}',
                      _when(r["approved_at"]), _when(r["review_by"]), str(r["indexed_version"] or "pending")]
                     for r in view["approved"]]
    return (note + f'<div class="kpis">{kpi_html}</div>'
            + "<h3>Waiting for review</h3>"
            + table(["#", "question", "answer (edit before approving)", "answered by", "set, visibility", "since"],
                     waiting_rows, "No drafts waiting.")
            + "<h3>Approved (in the learned source)</h3>"
            + table(["#", "question", "answer", "cited since approved", "set, visibility", "approved", "review by",
                      "index version"], approved_rows, "No approved learned answers yet."))


async def review(learned: LearnedAnswers, *, reviewer: str, fields: dict[str, str]) -> tuple[bool, str]:
    """A dashboard review decision: (ok, what to tell the viewer). Audited, allowed or refused."""
    decision = fields.get("decision", "")
    try:
        learned_id = int(fields.get("id", ""))
    except ValueError:
        return False, "which learned answer? (id)"
    try:
        if decision == "approve":
            row = await learned.approve(learned_id, reviewer)
        elif decision == "edit":
            row = await learned.approve(learned_id, reviewer, text=fields.get("text", ""))
        elif decision == "reject":
            row = await learned.reject(learned_id, reviewer)
        else:
            return False, "decision must be approve, edit or reject"
        ok, text = True, f"Learned answer #{row.id} {row.status}" + (" (edited)" if row.edited else "") + "."
    except ReviewRefused as exc:
        ok, text = False, str(exc)
    async with learned.db.asession() as session:
        session.add(AuditEntry(actor=f"{PLATFORM}:{reviewer}", platform=PLATFORM, where="learned",
                               command=f"learned {decision} {learned_id}", allowed=ok, detail=text[:500]))
        await session.commit()
    return ok, text
