"""The local chat's live answers (issue 14): the page's ``…/stream`` endpoint (Server-Sent Events) and the terminal,
through the real web app, queue and worker, with the fake Messages API streaming a cited answer token by token."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bot.core.settings import Settings
from bot.local_chat import terminal
from bot.local_chat.access import CONVERSATION_HEADER
from tests.fakes.anthropic_server import Reply
from tests.stack import Stack, running_stack


@pytest.fixture
async def model_stack(make_settings: Callable[..., Settings], fake_anthropic: Any) -> AsyncIterator[Stack]:
    settings = make_settings(anthropic_api_key="test-key", anthropic_base_url=fake_anthropic.url)
    async with running_stack(settings) as running:
        yield running


async def ask(stack: Stack, text: str) -> tuple[int, str]:
    response = await stack.client.post("/chat/api/ask", json={"text": text})
    assert response.status_code == 202, response.text
    return response.json()["interaction_id"], response.json()["conversation"]


async def events(stack: Stack, interaction_id: int, token: str) -> list[tuple[str, Any, float]]:
    """The SSE events of one answer, as the page reads them: (event, data, when it arrived)."""
    received: list[tuple[str, Any, float]] = []
    async with stack.client.stream("GET", f"/chat/api/interactions/{interaction_id}/stream",
                                   headers={CONVERSATION_HEADER: token}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        buffer = ""
        async for chunk in response.aiter_text():
            buffer += chunk
            while "\n\n" in buffer:
                raw, buffer = buffer.split("\n\n", 1)
                fields = dict(line.split(": ", 1) for line in raw.splitlines())
                received.append((fields["event"], json.loads(fields["data"]), time.monotonic()))
    return received


async def test_the_page_sees_the_answer_written_then_its_sources(model_stack: Stack, fake_anthropic: Any) -> None:
    fake_anthropic.script(Reply.answer(cite=[0], tokens_per_s=40, first_token_s=0.3))
    interaction_id, token = await ask(model_stack, "How much is the daily meal allowance when I travel?")
    seen = await events(model_stack, interaction_id, token)

    kinds = [kind for kind, _, _ in seen]
    assert kinds[-1] == "answer" and "text" in kinds
    assert [data["text"] for kind, data, _ in seen if kind == "status"][-1] == "Writing…"
    texts = [(data["text"], at) for kind, data, at in seen if kind == "text"]
    assert len(texts) > 2, "the answer arrives in pieces as the model writes it"
    final = seen[-1][1]
    assert "".join(t for t, _ in texts) == final["answer"], "what streamed is exactly the recorded answer"
    assert final["sources"] and final["sources"][0]["number"] == 1 and final["status"] == "answered"
    assert texts[0][1] < seen[-1][2], "the first words came before the end"


async def test_an_answer_that_is_not_streamed_still_arrives_whole(stack: Stack) -> None:
    interaction_id, token = await ask(stack, "How do I connect to the VPN?")  # no API key: an excerpt, at once
    seen = await events(stack, interaction_id, token)

    assert [kind for kind, _, _ in seen if kind == "text"] == []
    assert seen[-1][0] == "answer" and seen[-1][1]["fallback"] and seen[-1][1]["sources"]


async def test_the_stream_needs_the_conversations_token(stack: Stack) -> None:
    interaction_id, _ = await ask(stack, "How do I connect to the VPN?")
    missing = await stack.client.get(f"/chat/api/interactions/{interaction_id}/stream")
    assert missing.status_code == 403
    _, other = await ask(stack, "vpn")  # another conversation's token
    foreign = await stack.client.get(f"/chat/api/interactions/{interaction_id}/stream",
                                     headers={CONVERSATION_HEADER: other})
    assert foreign.status_code == 404


async def test_the_terminal_prints_the_answer_as_it_is_written(model_stack: Stack, fake_anthropic: Any) -> None:
    fake_anthropic.script(Reply.answer(cite=[0], tokens_per_s=80))
    with terminal.console.capture() as captured:
        assert await terminal.chat_loop(model_stack.web_runtime, ["How much is the meal allowance?"]) == 0
    out = captured.get()
    [row] = await model_stack.interactions()
    assert row.answer and out.count(row.answer[:40]) == 1, "printed once, as it streamed"
    assert "[1]" in out and "Per diem" in out


async def test_with_streaming_off_the_page_gets_the_model_answer_whole(
        make_settings: Callable[..., Settings], fake_anthropic: Any) -> None:
    fake_anthropic.script(Reply.answer(cite=[0], tokens_per_s=40, first_token_s=0.3))
    settings = make_settings(anthropic_api_key="test-key", anthropic_base_url=fake_anthropic.url, streaming="off")
    async with running_stack(settings) as stack:
        interaction_id, token = await ask(stack, "How much is the daily meal allowance when I travel?")
        seen = await events(stack, interaction_id, token)

    assert fake_anthropic.requests, "a model answer"
    assert [kind for kind, _, _ in seen if kind == "text"] == [], "no text before the whole answer"
    assert seen[-1][0] == "answer" and "[1]" in seen[-1][1]["answer"] and not seen[-1][1]["fallback"]


async def test_a_question_that_cannot_be_recorded_is_answered_with_the_apology_in_its_language(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import OperationalError

    from bot import intake
    from bot.status_text import record_failed_reply
    from feedback.interactions import InteractionStore

    async def locked(*_args: Any, **_kwargs: Any) -> Any:
        raise OperationalError("INSERT …", {}, Exception("database is locked"))

    monkeypatch.setattr(InteractionStore, "record_pending", locked)
    monkeypatch.setattr(intake, "RECORD_BACKOFF_S", (0.01,))
    response = await stack.client.post("/chat/api/ask", json={"text": "¿Cuánto es la dieta diaria cuando viajo por "
                                                                       "trabajo al extranjero?"})
    assert response.status_code == 503
    assert response.json()["error"] == record_failed_reply("es") != intake.RECORD_FAILED_REPLY
    english = await stack.client.post("/chat/api/ask", json={"text": "How do I connect to the VPN from home?"})
    assert english.status_code == 503 and english.json()["error"] == intake.RECORD_FAILED_REPLY


async def test_a_fast_stream_reaches_the_reader_complete_in_order_and_in_fewer_events(redis_url: str) -> None:
    """The model's words come faster than the live stream flushes: they are coalesced, not lost or reordered,
    and the stream keeps its expiry (set with the first event, renewed with the last)."""
    from redis.asyncio import Redis

    from bot.core.types import Answer
    from bot.local_chat.live import LIVE_TTL_S, LocalAnswerStream, follow, live_key
    from bot.local_chat.web import local_question

    redis = Redis.from_url(redis_url)
    try:
        question = local_question("How do I connect to the VPN?", "c1")
        stream = LocalAnswerStream(redis, question)
        words = [f" word{i}" for i in range(300)]
        await stream.status("Writing…")
        for word in words:
            await stream.append(word)
        assert 0 < await redis.ttl(live_key(question.idempotency_key)) <= LIVE_TTL_S
        await stream.finish(Answer(text="".join(words)))
        received = [event async for event in follow(redis, question.idempotency_key, timeout_s=10)
                    if event is not None]
        ttl = await redis.ttl(live_key(question.idempotency_key))
    finally:
        await redis.aclose()
    texts = [e.text for e in received if e.kind == "text"]
    assert [e.kind for e in received][0] == "status" and received[-1].kind == "end"
    assert "".join(texts) == "".join(words)
    assert len(texts) < len(words) / 10, f"{len(texts)} text events for {len(words)} words"
    assert LIVE_TTL_S - 5 < ttl <= LIVE_TTL_S
