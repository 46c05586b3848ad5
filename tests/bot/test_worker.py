"""The answer path end to end: web → database → arq/Redis → worker → Claude (a local Messages API) → record.

Everything is real except Anthropic and Langfuse Cloud, which are local servers speaking their wire formats.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import httpx

from bot.core.settings import Settings
from bot.core.types import Status
from bot.local_chat.access import CONVERSATION_HEADER
from bot.local_chat.web import local_question
from tests.fakes.anthropic_server import Reply
from tests.fakes.redis_server import RedisServer
from tests.stack import Stack, running_stack


#: Per stack's client: the test's name for a conversation -> the token the server issued for it.
_conversations: weakref.WeakKeyDictionary[httpx.AsyncClient, dict[str, str]] = weakref.WeakKeyDictionary()


async def ask(stack: Stack, text: str, conversation: str = "c1") -> dict[str, Any]:
    tokens = _conversations.setdefault(stack.client, {})
    headers = {CONVERSATION_HEADER: tokens[conversation]} if conversation in tokens else {}
    response = await stack.client.post("/chat/api/ask", json={"text": text}, headers=headers)
    assert response.status_code == 202, response.text
    tokens[conversation] = response.json()["conversation"]
    row = await stack.wait_final(response.json()["interaction_id"])
    return (await stack.client.get(f"/chat/api/interactions/{row.id}",
                                   headers={CONVERSATION_HEADER: tokens[conversation]})).json()


def claude_settings(make_settings: Callable[..., Settings], fake: Any, **extra: Any) -> Settings:
    return make_settings(anthropic_api_key="sk-test", anthropic_base_url=fake.url, llm_max_retries=0,
                         llm_timeout_s=5, **extra)


async def test_claude_answer_with_citations_is_recorded_with_usage_and_cost(
    make_settings: Callable[..., Settings], fake_anthropic: Any
) -> None:
    async with running_stack(claude_settings(make_settings, fake_anthropic)) as stack:
        answer = await ask(stack, "How much is the meal per diem when I travel in Europe?")
        rows = await stack.interactions()
    assert answer["status"] == "answered" and answer["fallback"] is False
    assert answer["sources"] and answer["sources"][0]["doc_id"] == "travel/per-diem"
    assert "[1]" in answer["answer"] and answer["sources"][0]["quote"]
    request = fake_anthropic.message_requests[0]
    assert request.search_results, "passages are sent as search_result blocks"
    assert all(block["citations"] == {"enabled": True} for block in request.search_results)
    row = rows[0]
    assert row.release == "initial" and row.model and row.input_tokens > 0 and row.output_tokens > 0
    assert row.cost_usd > 0
    assert {"retrieve", "generate", "deliver"} <= set(row.latency_ms)
    assert row.passages and row.passages[0]["doc_id"]


async def test_thread_follow_up_sends_the_earlier_turn(make_settings: Callable[..., Settings], fake_anthropic: Any) -> None:
    async with running_stack(claude_settings(make_settings, fake_anthropic)) as stack:
        await ask(stack, "How many days of annual leave do I get?", conversation="thread-1")
        await ask(stack, "and can I carry them over?", conversation="thread-1")
        await ask(stack, "What is the VPN called?", conversation="other-thread")
    answers = [r for r in fake_anthropic.message_requests if r.search_results]
    assert len(fake_anthropic.message_requests) == 4, "three answers and the follow-up's query rewrite"
    second, third = answers[1], answers[2]
    assert [m["role"] for m in second.body["messages"]] == ["user", "assistant", "user"]
    assert "annual leave" in str(second.body["messages"][0]["content"])
    assert len(third.body["messages"]) == 1, "another thread does not see this one's history"


async def test_llm_outage_falls_back_to_cited_excerpts(make_settings: Callable[..., Settings], fake_anthropic: Any) -> None:
    fake_anthropic.always(Reply.overloaded())
    async with running_stack(claude_settings(make_settings, fake_anthropic)) as stack:
        answer = await ask(stack, "How do I report a phishing email?")
    assert answer["status"] == "answered" and answer["fallback"] is True
    assert "unavailable" in answer["fallback_reason"]
    assert answer["sources"] and "not written by the AI model" in answer["answer"]


async def test_model_says_not_found_and_unrelated_questions_are_marked_unanswered(
    make_settings: Callable[..., Settings], fake_anthropic: Any
) -> None:
    fake_anthropic.always(Reply.not_found())
    async with running_stack(claude_settings(make_settings, fake_anthropic)) as stack:
        declined = await ask(stack, "Who won the football world cup in 1998?")
        rows = await stack.interactions()
    assert declined["status"] == "not_found"
    assert rows[0].status == Status.NOT_FOUND


async def test_redelivered_question_is_answered_once(stack: Stack) -> None:
    intake = stack.web_runtime.intake
    question = local_question("How do I set up MFA?", "c1")
    first = await intake.submit(question)
    second = await intake.submit(question)
    assert first.interaction_id is not None and second.duplicate
    await stack.wait_final(first.interaction_id)
    third = await intake.submit(question)
    assert third.duplicate
    rows = await stack.interactions()
    assert len(rows) == 1 and rows[0].attempts == 1


async def test_question_submitted_while_redis_is_down_is_answered_when_it_returns(
    make_settings: Callable[..., Settings], redis_server: RedisServer
) -> None:
    settings = make_settings(sweeper_min_age_s=0.0)  # the worker's first sweep takes it, however fast this runs
    async with running_stack(settings, worker=False) as stack:
        redis_server.stop()
        try:
            response = await stack.client.post("/chat/api/ask", json={"text": "How do I connect to the VPN?"})
            assert response.status_code == 202 and response.json()["queued"] is False
            ready = await stack.client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("error")
        finally:
            redis_server.start()
        rows = await stack.interactions()
        assert [r.status for r in rows] == ["pending"], "the question was kept while Redis was down"
        from tests.stack import running_worker

        async with running_worker(settings):
            row = await stack.wait_final(rows[0].id)
    assert row.status == "answered" and row.sources


async def test_answer_is_traced_in_langfuse(make_settings: Callable[..., Settings], fake_anthropic: Any) -> None:
    from tests.fakes.langfuse_server import start_fake_langfuse

    with start_fake_langfuse() as langfuse:
        settings = claude_settings(make_settings, fake_anthropic, langfuse_public_key=langfuse.public_key,
                                   langfuse_secret_key=langfuse.secret_key, langfuse_host=langfuse.url)
        async with running_stack(settings) as stack:
            answer = await ask(stack, "How much is the meal per diem?", conversation="t-42")
            stack.worker.ctx["runtime"].tracer.flush()
            rows = await stack.interactions()
        names = {s.name for s in langfuse.spans}
        assert {"answer", "retrieve", "generate"} <= names
        trace_ids = {s.trace_id for s in langfuse.spans}
        assert rows[0].trace_id in trace_ids
        assert answer["status"] == "answered"


async def test_the_worker_opens_the_vector_store_before_it_takes_a_job(stack: Stack) -> None:
    """warm_up creates the Chroma client at startup: a burst of first jobs does not race to create it."""
    store = stack.worker.ctx["runtime"].store
    assert store._client is not None
