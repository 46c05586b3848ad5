"""The local chat page's API, through the real queue and worker (no API key: cited extractive answers)."""

from __future__ import annotations

from tests.stack import Stack


async def ask(stack: Stack, text: str, conversation: str = "c1") -> dict:
    response = await stack.client.post("/chat/api/ask", json={"text": text, "conversation_id": conversation})
    assert response.status_code == 202, response.text
    interaction_id = response.json()["interaction_id"]
    await stack.wait_final(interaction_id)
    return (await stack.client.get(f"/chat/api/interactions/{interaction_id}")).json()


async def test_question_gets_a_labelled_extractive_answer_with_sources(stack: Stack) -> None:
    answer = await ask(stack, "How much is the daily meal allowance when I travel?")
    assert answer["status"] == "answered"
    assert answer["fallback"] is True and answer["fallback_reason"] == "no API key configured"
    assert "not written by the AI model" in answer["answer"]
    assert answer["sources"], "an extractive answer still cites its sources"
    assert answer["sources"][0]["doc_id"] == "travel/per-diem"
    assert "[1]" in answer["answer"]


async def test_page_is_served(stack: Stack) -> None:
    page = await stack.client.get("/chat")
    assert page.status_code == 200 and "Deskmate" in page.text


async def test_empty_and_huge_messages_are_refused_with_a_clear_error(stack: Stack) -> None:
    empty = await stack.client.post("/chat/api/ask", json={"text": "   "})
    assert empty.status_code == 400 and "Ask me a question" in empty.json()["error"]
    huge = await stack.client.post("/chat/api/ask", json={"text": "why " * 5000})
    assert huge.status_code == 413 and "shorter" in huge.json()["error"]
    broken = await stack.client.post("/chat/api/ask", content=b"{not json", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400
    assert await stack.interactions() == [], "refused messages are not queued"


async def test_vote_and_change_of_vote_keep_one_label(stack: Stack) -> None:
    answer = await ask(stack, "vpn not working")
    iid = answer["interaction_id"]
    assert (await stack.client.post("/chat/api/feedback", json={"interaction_id": iid, "label": "up"})).json()["changed"] is False
    again = await stack.client.post("/chat/api/feedback", json={"interaction_id": iid, "label": "down", "reason": "wrong"})
    assert again.json()["changed"] is True
    from sqlmodel import select

    from feedback.models import Feedback

    async with stack.db.asession() as session:
        rows = list((await session.exec(select(Feedback))).all())
    assert [(r.label, r.reason) for r in rows] == [("down", "wrong")]


async def test_health_and_readiness(stack: Stack) -> None:
    assert (await stack.client.get("/healthz")).json() == {"status": "ok"}
    ready = await stack.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"redis": "ok", "database": "ok", "index": "ok"}
