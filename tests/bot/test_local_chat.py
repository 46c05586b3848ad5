"""The local chat page's API in development (no sign-in), through the real queue and worker (no API key: cited
extractive answers). Access in production, conversations and votes: tests/bot/local_chat/test_access.py."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event

from bot.local_chat.access import CONVERSATION_HEADER
from tests.stack import Stack


async def ask_in(stack: Stack, text: str, token: str | None = None,
                 headers: dict[str, str] | None = None) -> tuple[dict, str]:
    """Ask (in the conversation of ``token``, or a new one) and wait: the answer's JSON and the conversation's token."""
    sent = {**(headers or {}), **({CONVERSATION_HEADER: token} if token else {})}
    response = await stack.client.post("/chat/api/ask", json={"text": text}, headers=sent)
    assert response.status_code == 202, response.text
    interaction_id, token = response.json()["interaction_id"], response.json()["conversation"]
    await stack.wait_final(interaction_id)
    view = await stack.client.get(f"/chat/api/interactions/{interaction_id}",
                                  headers={**(headers or {}), CONVERSATION_HEADER: token})
    assert view.status_code == 200, view.text
    return view.json(), token


async def ask(stack: Stack, text: str) -> dict:
    return (await ask_in(stack, text))[0]


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
    form = await stack.client.post("/chat/api/ask", content=b'{"text": "vpn"}', headers={"Content-Type": "text/plain"})
    assert form.status_code == 415, "JSON only: a cross-site form cannot post without a CORS preflight"
    assert await stack.interactions() == [], "refused messages are not queued"


async def test_vote_and_change_of_vote_keep_one_label(stack: Stack) -> None:
    answer, token = await ask_in(stack, "vpn not working")
    iid = answer["interaction_id"]
    conversation = {CONVERSATION_HEADER: token}
    first = await stack.client.post("/chat/api/feedback", json={"interaction_id": iid, "label": "up"}, headers=conversation)
    assert first.json()["changed"] is False
    again = await stack.client.post("/chat/api/feedback", json={"interaction_id": iid, "label": "down", "reason": "wrong"},
                                    headers=conversation)
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


async def test_page_carries_the_shared_status_wording(stack: Stack) -> None:
    from bot.status_text import PLACEHOLDER, VOTE_UP_THANKS

    page = (await stack.client.get("/chat")).text
    assert "{{TEXTS}}" not in page
    assert PLACEHOLDER.text in page and VOTE_UP_THANKS in page


async def test_labels_come_from_status_text_and_the_text_drops_the_extractive_label(stack: Stack) -> None:
    from bot.status_text import FALLBACK_TITLE

    answer = await ask(stack, "How much is the daily meal allowance when I travel?")
    assert answer["label"]["title"] == FALLBACK_TITLE and "no API key configured" in answer["label"]["detail"]
    assert not answer["text"].startswith("_Automatic excerpt"), "the label is not shown twice"
    assert answer["text"] and answer["text"] in answer["answer"]


class RecordingTracer:
    enabled = True

    def __init__(self) -> None:
        self.scores: list[dict] = []

    def score(self, **kwargs: object) -> None:
        self.scores.append(kwargs)

    def shutdown(self) -> None:
        pass


async def test_terminal_chat_answers_and_its_vote_is_recorded_and_scored(stack: Stack) -> None:
    from sqlmodel import select

    from bot.local_chat import terminal
    from feedback.models import Feedback, Interaction

    rt = stack.web_runtime
    with terminal.console.capture() as captured:
        assert await terminal.chat_loop(rt, ["How do I connect to the VPN?"]) == 0
    assert "you>" in captured.get() and "[1]" in captured.get()
    [row] = await stack.interactions()
    async with stack.db.asession() as session:  # as if Langfuse had traced the answer
        stored = await session.get(Interaction, row.id)
        assert stored is not None
        stored.trace_id = "trace-local"
        session.add(stored)
        await session.commit()
    tracer = RecordingTracer()
    rt.tracer = tracer  # type: ignore[assignment]
    await terminal.vote(rt, row.id, "n")
    async with stack.db.asession() as session:
        votes = list((await session.exec(select(Feedback))).all())
    assert [(v.label, v.platform) for v in votes] == [("down", "local")]
    assert [(s["trace_id"], s["value"]) for s in tracer.scores] == [("trace-local", 0.0)]


async def test_readiness_fails_while_the_database_is_read_only(stack: Stack) -> None:
    """`SELECT 1` still works on a read-only database; readiness must cover writing (answers are recorded)."""
    engine = stack.db.async_engine.sync_engine

    def read_only(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA query_only = ON")

    event.listen(engine, "connect", read_only)
    await stack.db.async_engine.dispose()  # new connections get the pragma
    try:
        ready = await stack.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("error") and "readonly" in ready.text.replace(" ", "")
        assert ready.json()["checks"]["redis"] == "ok"
    finally:
        event.remove(engine, "connect", read_only)
        await stack.db.async_engine.dispose()
    # ready again once writes work (polled: on a loaded machine one check may time out; /readyz says which)
    deadline = asyncio.get_running_loop().time() + 15
    while (again := await stack.client.get("/readyz")).status_code != 200:
        assert asyncio.get_running_loop().time() < deadline, again.text
        await asyncio.sleep(0.2)


async def test_a_german_question_gets_its_excerpt_label_and_not_found_reply_in_german(stack: Stack) -> None:
    """Through the real queue, worker and pipeline; the label is read back from the recorded interaction."""
    from bot.status_text import wording

    de = wording("de")
    answer, token = await ask_in(stack, "Wie installiere ich den GlobalProtect VPN Client?")
    assert answer["status"] == "answered" and answer["fallback"] is True
    assert answer["fallback_reason"] == "no API key configured", "recorded in English for the operators"
    assert answer["answer"].startswith(f"_{de.excerpt_title} — {de.excerpt_note} (kein API-Schlüssel konfiguriert)._")
    assert answer["label"]["title"] == de.excerpt_title
    assert answer["label"]["detail"] == f"{de.excerpt_detail} (kein API-Schlüssel konfiguriert)."
    assert answer["text"].startswith("> ") and de.excerpt_title not in answer["text"], "the label is shown once"
    assert answer["sources"] and "[1]" in answer["text"], "the quotes (the documents' English) cite their sources"

    # off topic, and far from every passage: declined by the calibrated "not found" (knowledge.calibration)
    declined, _ = await ask_in(stack, "Wer hat 1990 die Fußball-Weltmeisterschaft gewonnen?", token)
    assert declined["status"] == "not_found", declined["answer"]
    assert declined["answer"].startswith(de.not_found) and declined["label"]["title"] == de.not_found_label.title
    assert de.closest_sources in declined["answer"] or not declined["sources"]
    assert "couldn't find" not in declined["answer"]


async def test_the_maintenance_reply_is_in_the_askers_language(stack: Stack) -> None:
    from bot.status_text import wording
    from playbooks.killswitch import GLOBAL_SCOPE, Mode, set_mode

    async with stack.db.asession() as session:
        await set_mode(session, GLOBAL_SCOPE, Mode.OFF, actor="test")
    try:
        spanish = await ask(stack, "¿Cuántos días de vacaciones tengo al año?")
        english = await ask(stack, "How many vacation days do I get per year?")
    finally:
        async with stack.db.asession() as session:
            await set_mode(session, GLOBAL_SCOPE, Mode.ON, actor="test")
    assert spanish["status"] == english["status"] == "maintenance"
    assert spanish["answer"] == wording("es").maintenance_message
    assert spanish["label"]["title"] == "Deskmate está en pausa"
    assert english["answer"] == stack.settings.maintenance_message
    assert english["label"]["title"] == "Deskmate is paused"
