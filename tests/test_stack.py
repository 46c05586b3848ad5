"""The worker run to completion deterministically: ``tests.stack.drain`` runs the real worker (``build_worker``)
in arq burst mode, so a test that needs "every queued answer is done" waits for exactly that, not for a sleep."""

from __future__ import annotations

from collections.abc import Callable

from bot.core.settings import Settings
from bot.core.types import Status
from tests.stack import drain, running_stack


async def test_drain_answers_every_queued_question_and_returns(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    async with running_stack(settings, worker=False) as stack:
        asked = []
        for text in ("How do I connect to the VPN?", "How many days of annual leave do I get?"):
            response = await stack.client.post("/chat/api/ask", json={"text": text, "conversation_id": text[:8]})
            assert response.status_code == 202 and response.json()["queued"] is True
            asked.append(response.json()["interaction_id"])
        assert {r.status for r in await stack.interactions()} == {"pending"}, "no worker yet"

        worker = await drain(settings)

        assert worker.jobs_complete >= 2 and worker.jobs_failed == 0
        rows = {r.id: r for r in await stack.interactions()}
        assert [rows[i].status for i in asked] == [Status.ANSWERED, Status.ANSWERED]
        assert all(rows[i].sources and "deliver" in rows[i].latency_ms for i in asked)
        assert await stack.web_runtime.redis.zcard("arq:queue") == 0
