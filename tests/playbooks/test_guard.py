"""The budget guard and the trend alerts: real worker, real Redis, the local fakes of Claude and Slack."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlmodel import col, select

from bot.core.clock import utcnow
from bot.core.settings import Settings
from bot.notifier import AdminChannelNotifier
from bot.runtime import Runtime, build_runtime
from feedback.models import Alert, AuditEntry, Feedback, Interaction, Switch
from playbooks.alerts import Alerter
from playbooks.guard import Guard, guard_cron
from playbooks.killswitch import Mode, effective_mode, set_mode
from playbooks.releases import activate, create_release
from tests.fakes.anthropic_server import Reply
from tests.fakes.slack_api import start_fake_slack
from tests.playbooks.conftest import ADMIN_IDS, ask_in, claude_settings, run
from tests.stack import running_stack


async def eventually(check: Callable[[], Awaitable[Any]], timeout_s: float = 10.0) -> Any:
    """The guard runs after the answer is recorded and delivered: wait for its effect."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


def guard_of(rt: Runtime) -> Guard:
    """The process's guard, as the worker builds it: alerts go to the Slack admin channel."""
    return Guard(settings=rt.settings, db=rt.db, redis=rt.redis, notifier=AdminChannelNotifier(rt.settings))


async def alerts(rt: Runtime) -> list[Alert]:
    async with rt.db.asession() as session:
        return list((await session.exec(select(Alert).order_by(col(Alert.id)))).all())


async def global_switch(rt: Runtime) -> Switch | None:
    async with rt.db.asession() as session:
        return await session.get(Switch, "global")


async def test_the_budget_cap_flips_deskmate_to_retrieval_only_and_alerts_the_admin_channel(
    make_settings: Callable[..., Settings], fake_anthropic: Any
) -> None:
    async with start_fake_slack() as slack:
        settings = claude_settings(make_settings, fake_anthropic, daily_budget_usd=0.001, admin_channel="C0ADMINS",
                                   slack_bot_token="xoxb-test", slack_api_url=slack.api_url)
        async with running_stack(settings) as stack:
            rt = stack.web_runtime
            first = await ask_in(rt, "C1")
            assert not first.fallback and first.cost_usd > 0.001, "one Claude answer crosses this tiny cap"

            switch = await eventually(lambda: global_switch(rt))
            assert switch is not None and switch.mode == "retrieval-only" and switch.automatic
            assert switch.set_by == "budget-guard" and "daily LLM budget $0.00" in switch.reason
            async def delivered() -> list[Alert]:
                return [a for a in await alerts(rt) if a.delivered]

            [alert] = await eventually(delivered)
            assert alert.kind == "budget" and alert.delivered
            assert "cost-spike.md" in alert.message and "/deskmate kill on" in alert.message
            posted = await slack.wait_for("chat.postMessage", channel="C0ADMINS")
            assert "Daily LLM budget reached" in posted.args["text"]

            second = await ask_in(rt, "C2")
            assert second.fallback and second.fallback_reason == "retrieval-only mode"
            assert len(fake_anthropic.message_requests) == 1, "no LLM call once over budget"
            budget = await run(rt, "budget")
            assert "the budget guard switched Deskmate to **retrieval-only**" in budget.text

            # an admin decides the LLM stays on today: the guard does not trip again
            assert (await run(rt, "kill on")).ok
            third = await ask_in(rt, "C3")
            assert not third.fallback and len(fake_anthropic.message_requests) == 2
            assert await global_switch(rt) is None
            assert len(await alerts(rt)) == 1
            assert "an admin turned the LLM back on" in (await run(rt, "budget")).text

            async with rt.db.asession() as session:
                guard_entries = (await session.exec(select(AuditEntry).where(AuditEntry.actor == "budget-guard"))).all()
            assert [(e.before, e.after) for e in guard_entries] == [("global=on", "global=retrieval-only")]


async def test_the_automatic_switch_lapses_at_midnight_utc_but_an_admins_does_not(web_rt: Runtime) -> None:
    yesterday = utcnow() - timedelta(days=1)
    async with web_rt.db.asession() as session:
        await set_mode(session, "global", Mode.RETRIEVAL_ONLY, actor="budget-guard", automatic=True, reason="budget")
        await set_mode(session, "slack:C0PAUSED", Mode.OFF, actor="slack:UADMIN", reason="admin's choice")
        for scope in ("global", "slack:C0PAUSED"):
            row = await session.get(Switch, scope)
            assert row is not None
            row.set_at = yesterday
            session.add(row)
        await session.commit()
        mode, _ = await effective_mode(session, "slack", "C1")
        assert mode == Mode.ON, "an automatic switch from yesterday is ignored at once, before anyone clears it"
        assert (await effective_mode(session, "slack", "C0PAUSED"))[0] == Mode.OFF

    assert await guard_of(web_rt).clear_lapsed_switches() == ["global"]
    assert await global_switch(web_rt) is None
    async with web_rt.db.asession() as session:
        assert await session.get(Switch, "slack:C0PAUSED") is not None
    assert [a.kind for a in await alerts(web_rt)] == ["budget-reset"]
    assert await guard_of(web_rt).clear_lapsed_switches() == [], "idempotent"


async def test_todays_automatic_switch_stays_and_a_budget_without_spend_does_not_trip(web_rt: Runtime) -> None:
    async with web_rt.db.asession() as session:
        await set_mode(session, "global", Mode.RETRIEVAL_ONLY, actor="budget-guard", automatic=True)
    assert await guard_of(web_rt).clear_lapsed_switches() == []
    web_rt.settings.daily_budget_usd = 5.0
    assert await guard_of(web_rt).check_budget() is False


def add_interactions(session: Any, n: int, **fields: Any) -> None:
    now = utcnow()
    for _ in range(n):
        session.add(Interaction(idempotency_key=uuid.uuid4().hex, platform="slack",
                                channel="C1", question="q", answered_at=now, release="initial",
                                **{"status": "answered", **fields}))


async def test_a_downvote_spike_alerts_once_naming_the_runbook_and_the_rollback_command(
    make_settings: Callable[..., Settings],
) -> None:
    async with start_fake_slack() as slack:
        rt = await build_runtime(make_settings(admin_user_ids=ADMIN_IDS, admin_channel="C0ADMINS",
                                               slack_bot_token="xoxb-test", slack_api_url=slack.api_url,
                                               alert_downvote_window=10, alert_downvote_rate=0.4), worker=False)
        try:
            async with rt.db.asession() as session:
                await create_release(session, rt.settings, "r2", actor="test", notes="new prompt")
                await activate(session, rt.settings, "r2", actor="test", action="promote")
                add_interactions(session, 10)
                await session.commit()
                for i in range(10):
                    session.add(Feedback(interaction_id=i + 1, user_hash=f"u{i}", platform="slack",
                                         label="down" if i < 5 else "up"))
                session.add(Feedback(interaction_id=1, user_hash="esc", platform="slack", label="none", escalated=True))
                await session.commit()
            assert await guard_of(rt).check_alerts() == ["downvote-rate"]
            [alert] = await alerts(rt)
            assert "5 of the last 10 rated answers got 👎 (50%" in alert.message
            assert "bad-answers-reported.md" in alert.message
            assert "deskmate rollback initial" in alert.message and "/deskmate rollback" in alert.message
            assert alert.delivered
            assert (await slack.wait_for("chat.postMessage", channel="C0ADMINS")).args["text"] == alert.message

            assert await guard_of(rt).check_alerts() == [], "the cool-down stops a repeat"
            async with rt.db.asession() as session:
                row = (await session.exec(select(Alert))).one()
                row.at = utcnow() - timedelta(hours=2)
                session.add(row)
                await session.commit()
            await rt.redis.flushall()
            assert await guard_of(rt).check_alerts() == ["downvote-rate"], "after the cool-down it is raised again"
        finally:
            await rt.aclose()


async def test_fallback_and_error_rates_alert_but_chosen_fallbacks_do_not_count(web_rt: Runtime) -> None:
    async with web_rt.db.asession() as session:
        add_interactions(session, 20, fallback=True, fallback_reason="retrieval-only mode")
        add_interactions(session, 20, fallback=True, fallback_reason="no API key configured")
        add_interactions(session, 6)
        await session.commit()
    assert await guard_of(web_rt).check_alerts() == [], "retrieval-only and no-key fallbacks are not an outage"

    async with web_rt.db.asession() as session:
        add_interactions(session, 4, fallback=True, fallback_reason="the AI model is unavailable (circuit open)")
        add_interactions(session, 6, status="error", error="boom")
        await session.commit()
    raised = await guard_of(web_rt).check_alerts()
    assert raised == ["fallback-rate", "error-rate"]
    by_kind = {a.kind: a for a in await alerts(web_rt)}
    assert "4 of 10 answers" in by_kind["fallback-rate"].message
    assert "llm-provider-outage.md" in by_kind["fallback-rate"].message
    assert "/deskmate kill retrieval-only" in by_kind["fallback-rate"].message
    assert "6 of 56 questions" in by_kind["error-rate"].message and "bad-release.md" in by_kind["error-rate"].message
    assert not by_kind["error-rate"].delivered, "no Slack configured: stored and logged only"


async def test_rate_checks_run_once_per_interval_across_processes(web_rt: Runtime) -> None:
    web_rt.settings.guard_check_interval_s = 30
    assert await guard_of(web_rt)._due() is True
    assert await guard_of(web_rt)._due() is False


async def test_a_slack_failure_still_stores_the_alert(make_settings: Callable[..., Settings]) -> None:
    async with start_fake_slack() as slack:
        slack.fail("chat.postMessage", "channel_not_found")
        rt = await build_runtime(make_settings(admin_channel="C0GONE", slack_bot_token="xoxb-test",
                                               slack_api_url=slack.api_url), worker=False)
        try:
            alerter = Alerter(settings=rt.settings, db=rt.db, redis=rt.redis,
                              notifier=AdminChannelNotifier(rt.settings))
            alert = await alerter.raise_alert("test", "hello")
            assert alert is not None and not alert.delivered
            assert await alerter.raise_alert("test", "hello again") is None
        finally:
            await rt.aclose()


async def test_an_llm_outage_through_the_worker_raises_the_fallback_alert(
    make_settings: Callable[..., Settings], fake_anthropic: Any
) -> None:
    fake_anthropic.always(Reply.overloaded())
    settings = claude_settings(make_settings, fake_anthropic, alert_min_samples=3, guard_check_interval_s=0,
                               breaker_failure_threshold=100)
    async with running_stack(settings) as stack:
        for _ in range(3):
            row = await ask_in(stack.web_runtime, "C1", "How do I report a phishing email?")
            assert row.fallback
        kinds = [a.kind for a in await eventually(lambda: alerts(stack.web_runtime))]
    assert kinds == ["fallback-rate"]


async def test_the_cron_entry_point_alerts_when_every_job_fails(web_rt: Runtime) -> None:
    """Failed jobs never reach after_answer; guard_cron (for the worker's cron) still sees the error rate."""
    async with web_rt.db.asession() as session:
        add_interactions(session, 12, status="error", error="Redis timeout")
        await session.commit()
    ctx = {"guard": guard_of(web_rt)}
    assert await guard_cron(ctx) == ["error-rate"]
    assert await guard_cron(ctx) == [], "throttled by guard_check_interval_s"
