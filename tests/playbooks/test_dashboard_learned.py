"""The dashboard's learned answers: escalations, drafts waiting, approved answers and how often each was cited
since its approval; a knowledge gap linked to its draft; a review from the dashboard (audited, written as a
document, the index refresh asked of a worker). The web process only, on a seeded database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from bot.core.clock import utcnow
from feedback.learned import APPROVED, DRAFT, Escalation, LearnedAnswer, LearnedStore
from feedback.models import AuditEntry, Interaction
from playbooks.learned import REFRESH_JOB
from tests.conftest import settings_for
from tests.stack import Stack, running_stack

TOKEN = "dash-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PARKING = "How do I get a parking permit for the office garage?"


@pytest.fixture
async def dashboard(tmp_path: Path, redis_url: str) -> AsyncIterator[Stack]:
    settings = settings_for(tmp_path, database_url=f"sqlite:///{tmp_path / 'd.db'}", redis_url=redis_url,
                            dashboard_token=TOKEN, web_port=0, learned_teams={"*": "Workplace Support"})
    async with running_stack(settings, worker=False) as stack:
        yield stack


async def seed(stack: Stack) -> tuple[int, int]:
    """A question nobody could answer, escalated, with a draft; an approved answer cited twice since approval."""
    now = utcnow()
    async with stack.db.asession() as session:
        gap = Interaction(idempotency_key="q1", platform="slack", channel="CGEN", question=PARKING,
                          status="not_found", answered_at=now - timedelta(hours=3), created_at=now - timedelta(hours=3),
                          question_payload={"channel_type": "channel", "user": "W222"})
        session.add(gap)
        await session.commit()
        await session.refresh(gap)
        escalation = Escalation(interaction_id=gap.id or 0, platform="slack", support_channel="CSUP",
                                support_thread="1.000001")
        session.add(escalation)
        await session.commit()
        await session.refresh(escalation)
    store = LearnedStore(stack.db)
    draft = await store.add(LearnedAnswer(escalation_id=escalation.id, interaction_id=gap.id, platform="slack",
                                          question=PARKING, answer="Facilities issues them; ask at reception.",
                                          answered_by="W444", public=True, knowledge_set="it"))
    approved_at = now - timedelta(days=2)
    approved = await store.add(LearnedAnswer(
        platform="slack", question="How do I reset my VPN token?", answer="Open the NorthGate app, then Reset.",
        status=APPROVED, approved_at=approved_at, review_by=now + timedelta(days=100),
        doc_id="learned/how-do-i-reset-my-vpn-token-2", knowledge_set="it", public=True, indexed_version=4))
    assert draft is not None and approved is not None and draft.id and approved.id
    async with stack.db.asession() as session:
        for n, days_ago in enumerate((3, 1, 0.5)):  # the first one was before the approval
            session.add(Interaction(idempotency_key=f"c{n}", platform="slack", channel="CGEN", status="answered",
                                    question="vpn token reset?", created_at=now - timedelta(days=days_ago),
                                    sources=[{"number": 1, "doc_id": approved.doc_id, "title": "Answered by",
                                              "location": "https://x", "heading": ""}]))
        await session.commit()
    return draft.id, approved.id


async def test_escalations_drafts_approved_answers_and_their_citations(dashboard: Stack) -> None:
    draft_id, approved_id = await seed(dashboard)
    response = await dashboard.client.get("/dashboard/api/learned", headers=AUTH)
    assert response.status_code == 200
    view = response.json()
    assert view["counts"]["escalations"] == 1 and view["counts"][DRAFT] == 1 and view["counts"][APPROVED] == 1
    assert [r["id"] for r in view["waiting"]] == [draft_id]
    [approved] = view["approved"]
    assert (approved["id"], approved["cited"]) == (approved_id, 2), "cited twice since it was approved"
    assert (await dashboard.client.get("/dashboard/api/learned")).status_code == 401

    page = (await dashboard.client.get("/dashboard", headers=AUTH)).text
    gaps = page[page.index('<section id="gaps">'):page.index('<section id="learned">')]
    assert PARKING in gaps and f'href="#learned-{draft_id}"' in gaps, "the gap links to its draft"
    learned = page[page.index('<section id="learned">'):]
    assert f'id="learned-{draft_id}"' in learned and "Save edit &amp; approve" in learned


async def test_a_review_from_the_dashboard_is_written_audited_and_sent_to_the_index(dashboard: Stack) -> None:
    draft_id, _ = await seed(dashboard)
    text = "Facilities issues garage permits: fill in the intranet form, collect the sticker at reception."
    response = await dashboard.client.post("/dashboard/actions/learned", headers=AUTH,
                                           json={"id": draft_id, "decision": "edit", "text": text})
    assert response.status_code == 200 and response.json()["ok"], response.text
    row = await LearnedStore(dashboard.db).get(draft_id)
    assert row is not None and (row.status, row.answer, row.edited) == (APPROVED, text, True)
    [document] = list(dashboard.settings.learned_dir().rglob("*.md"))
    content = document.read_text()
    assert "title: Answered by Workplace Support on" in content and text in content and PARKING in content
    assert "visibility: public" in content and "knowledge_set: it" in content and "review_by:" in content
    jobs = await dashboard.web_runtime.redis.queued_jobs()
    assert [(j.function, j.args) for j in jobs] == [(REFRESH_JOB, ("default",))], "a worker refreshes the index"
    async with dashboard.db.asession() as session:
        audit = (await session.exec(select(AuditEntry).where(AuditEntry.where == "learned"))).all()
    assert [(a.command, a.allowed) for a in audit] == [(f"learned edit {draft_id}", True)]

    again = await dashboard.client.post("/dashboard/actions/learned", headers=AUTH,
                                        json={"id": 999, "decision": "approve"})
    assert again.status_code == 400 and "no learned answer" in again.json()["text"]
