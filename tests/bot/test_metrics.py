"""/metrics on the web process and the worker, and the job's log lines (interaction id on each, no message text)."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import structlog
from prometheus_client.parser import text_string_to_metric_families

from bot.core.log import configure_logging
from bot.core.settings import Settings
from bot.local_chat.access import CONVERSATION_HEADER
from bot.metrics import BREAKER_NAME, StateCollector
from tests.fakes.anthropic_server import Reply
from tests.fakes.redis_server import free_port
from tests.stack import running_stack
from tests.waiting import wait_until


async def job_finished(stack: Any, timeout_s: float = 10) -> None:
    """The row is final before the job returns (delivery, hooks): wait until the arq queue is empty."""
    async def no_job_due() -> bool:
        # a job stays in the queue until it returns; later scores are the sweeper's next runs
        return not await stack.web_runtime.redis.zcount("arq:queue", "-inf", int(time.time() * 1000))

    await wait_until(no_job_due, timeout_s=timeout_s, what="the job finished")


async def scraped_with_an_empty_queue(stack: Any, timeout_s: float = 10) -> str:
    """The web process's /metrics once it shows no job due. The answer's job is done, but the worker's cron jobs
    (the canary's every 5 s, the sweep's) pass through the queue too, and a scrape may catch one there."""
    async def scrape_with_an_empty_queue() -> str | None:
        text: str = (await stack.client.get("/metrics")).text
        return text if value(samples(text), "deskmate_queue_depth") == 0 else None

    return await wait_until(scrape_with_an_empty_queue, timeout_s=timeout_s, what="/metrics showing the queue empty")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_web_and_worker_metrics_after_an_answer(make_settings: Callable[..., Settings],
                                                      fake_anthropic: Any) -> None:
    port = free_port()
    settings = make_settings(anthropic_api_key="sk-test", anthropic_base_url=fake_anthropic.url, llm_max_retries=0,
                             worker_metrics_port=port, metrics_cache_s=0)
    async with running_stack(settings) as stack:
        before = samples((await stack.client.get("/metrics")).text)
        asked = await stack.client.post("/chat/api/ask", json={"text": "How much is the meal per diem?"})
        row = await stack.wait_final(asked.json()["interaction_id"])
        await stack.client.post("/chat/api/feedback", json={"interaction_id": row.id, "label": "up"},
                                headers={CONVERSATION_HEADER: asked.json()["conversation"]})
        await job_finished(stack)
        web_text = await scraped_with_an_empty_queue(stack)
        async with httpx.AsyncClient() as client:
            worker_text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        health = await stack.client.get("/healthz")
    assert health.status_code == 200
    after = samples(web_text)
    # process-local: the acks of the local chat's POSTs (question, vote), request latency by route template
    assert value(after, "deskmate_ack_duration_seconds_count", platform="local") == \
        value(before, "deskmate_ack_duration_seconds_count", platform="local") + 2
    assert value(after, "deskmate_http_request_duration_seconds_count", platform="local",
                 route="/chat/api/ask", method="POST", status="2xx") >= 1
    # read from the database / Redis on scrape
    assert value(after, "deskmate_answers_total", platform="local", status="answered", fallback="false") == 1
    assert value(after, "deskmate_feedback_votes", label="up") == 1
    assert value(after, "deskmate_pending_questions") == 0
    assert value(after, "deskmate_queue_depth") == 0
    assert value(after, "deskmate_breaker_state", breaker=BREAKER_NAME, state="closed") == 1
    assert value(after, "deskmate_active_release_info", release="initial", model=row.model or "", kb="default",
                 index_version="latest") == 1
    assert value(after, "deskmate_killswitch_mode", scope="global", mode="on") == 1
    assert value(after, "deskmate_answer_rate_1h", kind="fallback") == 0
    assert value(after, "deskmate_state_up", source="database") == 1
    assert value(after, "deskmate_state_up", source="redis") == 1
    # the worker's own endpoint: stage latencies, tokens and cost (same process here, so compare deltas)
    worker = samples(worker_text)
    for stage in ("retrieve", "generate", "deliver"):
        assert value(worker, "deskmate_answer_stage_seconds_count", stage=stage) >= \
            value(before, "deskmate_answer_stage_seconds_count", stage=stage) + 1
    model = row.model or ""
    assert value(worker, "deskmate_llm_tokens_total", model=model, kind="input") - \
        value(before, "deskmate_llm_tokens_total", model=model, kind="input") == row.input_tokens
    assert value(worker, "deskmate_llm_cost_usd_total", model=model) > value(before, "deskmate_llm_cost_usd_total",
                                                                               model=model)
    assert value(worker, "deskmate_answers_total", platform="local", status="answered", fallback="false") == 1


async def test_metrics_token_and_unreadable_sources(make_settings: Callable[..., Settings]) -> None:
    async with running_stack(make_settings(metrics_token="s3cret"), worker=False) as stack:
        assert (await stack.client.get("/metrics")).status_code == 401
        ok = await stack.client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and "deskmate_queue_depth" in ok.text

        class DeadRedis:
            def __getattr__(self, name: str) -> Any:
                async def fail(*_a: Any, **_k: Any) -> Any:
                    raise ConnectionError("redis is down")
                return fail

        rt = stack.web_runtime
        broken = StateCollector(type(rt)(settings=rt.settings, db=rt.db, redis=DeadRedis()), cache_s=0)  # type: ignore[arg-type]
        await broken.refresh()
        found = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in broken.collect() for s in f.samples}
    assert found[("deskmate_state_up", (("source", "redis"),))] == 0
    assert found[("deskmate_state_up", (("source", "database"),))] == 1
    assert ("deskmate_pending_questions", ()) in found


async def test_a_jobs_log_lines_carry_the_interaction_id_and_not_the_question(
    make_settings: Callable[..., Settings], fake_anthropic: Any
) -> None:
    """JSON logs as in production: every line the job writes names the interaction; the text is never logged."""
    question = "How much is the meal per diem when I travel to Zanzibar?"
    fake_anthropic.always(Reply.server_error())  # an LLM failure → warning lines and the fallback, all in the job
    settings = make_settings(anthropic_api_key="sk-test", anthropic_base_url=fake_anthropic.url, llm_max_retries=0,
                             log_format="json", log_level="INFO")  # production's level (DEBUG adds drivers' lines)
    root = logging.getLogger()
    saved_handlers, saved_level, saved_config = root.handlers[:], root.level, structlog.get_config()
    buffer = io.StringIO()
    configure_logging(settings)
    root.handlers[0].setStream(buffer)  # type: ignore[attr-defined]
    try:
        async with running_stack(settings) as stack:
            asked = await stack.client.post("/chat/api/ask", json={"text": question})
            row = await stack.wait_final(asked.json()["interaction_id"])
            await job_finished(stack)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.configure(**saved_config)
        configure_logging_flag_reset()
    output = buffer.getvalue()
    assert question not in output and "Zanzibar" not in output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    job_lines = [ln for ln in lines if str(ln.get("event", "")).startswith(("pipeline.", "answer.", "llm."))
                 or ln.get("logger", "").startswith(("bot.pipeline", "bot.answering", "bot.llm", "bot.worker"))]
    events = {ln["event"] for ln in job_lines}
    assert {"pipeline.start", "pipeline.done"} <= events, events
    assert "pipeline.llm_error" in events
    missing = [ln for ln in job_lines if ln.get("interaction_id") != row.id and ln.get("event") != "worker.ready"]
    assert not missing, missing
    start = next(ln for ln in job_lines if ln["event"] == "pipeline.start")
    assert start["question"] == f"<{len(question)} chars>" and start["release"] == "initial"


def configure_logging_flag_reset() -> None:
    """configure_logging set the module's message-text flag from the test settings; put the default back."""
    import bot.core.log

    bot.core.log._log_message_text = False
