"""The shared admin command handler with a real database, Redis and (where answers matter) the real worker."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlmodel import col, select

from bot.core.clock import utcnow
from bot.core.settings import Settings
from bot.core.types import Status
from bot.runtime import Runtime
from feedback.models import AuditEntry, Feedback, Interaction, ReleaseEvent, Switch
from playbooks.admin import AdminActor, is_admin_command, split_command
from playbooks.gate import GateResult, register_gate
from playbooks.killswitch import effective_mode
from playbooks.releases import create_release
from feedback.releases import active_release
from tests.fakes.slack_api import start_fake_slack
from tests.playbooks.conftest import ADMIN, ADMIN_IDS, STRANGER, TEAMS_ADMIN, ask_in, claude_settings, run
from tests.stack import running_stack


async def audit_log(rt: Runtime) -> list[AuditEntry]:
    async with rt.db.asession() as session:
        return list((await session.exec(select(AuditEntry).order_by(col(AuditEntry.id)))).all())


async def test_kill_off_in_one_channel_gives_that_channel_the_maintenance_reply_while_another_is_answered(
    make_settings: Callable[..., Settings],
) -> None:
    async with running_stack(make_settings(admin_user_ids=ADMIN_IDS)) as stack:
        rt = stack.web_runtime  # the web process's runtime: no retriever, as in a slash command
        reply = await run(rt, "kill off <#CNOISY|noisy> payroll answers are wrong")
        assert reply.ok, reply.text
        assert "off" in reply.text and "maintenance" in reply.text

        noisy = await ask_in(rt, "CNOISY")
        quiet = await ask_in(rt, "CQUIET")
        assert noisy.status == Status.MAINTENANCE
        assert noisy.answer == stack.settings.maintenance_message
        assert noisy.fallback_reason == "payroll answers are wrong", "the switch's reason is recorded on the question"
        assert quiet.status == Status.ANSWERED and quiet.sources

        assert (await run(rt, "kill on <#CNOISY|noisy>")).ok
        again = await ask_in(rt, "CNOISY")
        assert again.status == Status.ANSWERED
        entries = await audit_log(rt)
    assert [(e.actor, e.where, e.after) for e in entries] == [
        ("slack:UADMIN (alice)", "slack:COPS", "slack:CNOISY=off"),
        ("slack:UADMIN (alice)", "slack:COPS", "slack:CNOISY=on"),
    ]


async def test_kill_is_obeyed_by_the_next_message_within_a_second(make_settings: Callable[..., Settings]) -> None:
    """No cache between the switch and the worker: the next message after the reply obeys it."""
    async with running_stack(make_settings(admin_user_ids=ADMIN_IDS)) as stack:
        rt = stack.web_runtime
        await ask_in(rt, "CWARM")  # the worker is warm
        started = time.monotonic()
        assert (await run(rt, "kill off")).ok
        row = await ask_in(rt, "CANY")
        elapsed = time.monotonic() - started
        assert row.status == Status.MAINTENANCE
        assert elapsed < 1.0, f"kill → maintenance reply took {elapsed:.2f} s"

        # what the worker reads per message costs milliseconds, so no cache is needed in front of it
        async with rt.db.asession() as session:
            t0 = time.perf_counter()
            for _ in range(20):
                await effective_mode(session, "slack", "CANY")
                await active_release(session, rt.settings)
            per_message_ms = (time.perf_counter() - t0) / 20 * 1000
        assert per_message_ms < 50, f"switch + release lookups take {per_message_ms:.1f} ms per message"


async def test_a_non_admins_kill_is_refused_and_audited(web_rt: Runtime) -> None:
    reply = await run(web_rt, "kill off", STRANGER)
    assert not reply.ok and "only Deskmate admins" in reply.text
    async with web_rt.db.asession() as session:
        assert await session.get(Switch, "global") is None, "nothing changed"
    [entry] = await audit_log(web_rt)
    assert entry.allowed is False and entry.command == "kill off"
    assert entry.actor == "slack:USTRANGER (mallory)" and entry.where == "slack:CGENERAL"
    assert entry.detail == "not an admin" and entry.at > utcnow() - timedelta(minutes=1)

    assert not (await run(web_rt, "status", STRANGER)).ok, "status shows spend: admins only"
    help_reply = await run(web_rt, "help", STRANGER)
    assert help_reply.ok and "`kill on|off|retrieval-only" in help_reply.text, "help is open to everyone"
    assert len(await audit_log(web_rt)) == 2, "help changes and shows nothing private: not audited"


async def test_allowed_actions_are_audited_with_before_and_after(web_rt: Runtime) -> None:
    await run(web_rt, "kill retrieval-only here LLM is slow")
    await run(web_rt, "kill off")
    await run(web_rt, "kill on")
    entries = await audit_log(web_rt)
    assert [(e.command, e.allowed, e.before, e.after) for e in entries] == [
        ("kill retrieval-only here LLM is slow", True, "slack:COPS=on", "slack:COPS=retrieval-only"),
        ("kill off", True, "global=on", "global=off"),
        ("kill on", True, "global=off", "global=on"),
    ]
    assert entries[0].detail == "reason: LLM is slow" and entries[0].actor == "slack:UADMIN (alice)"
    audit_reply = await run(web_rt, "audit 2")
    assert audit_reply.ok and "`kill on`" in audit_reply.text and "global=off → global=on" in audit_reply.text


async def test_admins_come_from_settings_in_both_forms_and_from_the_database(
    make_settings: Callable[..., Settings],
) -> None:
    from bot.runtime import build_runtime

    rt = await build_runtime(make_settings(admin_user_ids=["UPLAIN", "slack:UPREFIXED", "teams:29:1admin-aad"]),
                             worker=False)
    try:
        assert (await run(rt, "status", AdminActor("slack", "UPLAIN", "C1"))).ok
        assert (await run(rt, "status", AdminActor("slack", "UPREFIXED", "C1"))).ok
        assert not (await run(rt, "status", AdminActor("teams", "UPREFIXED", "19:x"))).ok, "the platform must match"
        assert (await run(rt, "status", TEAMS_ADMIN)).ok, "a Teams id containing ':' after the platform"
        newcomer = AdminActor("slack", "UNEW", "C1", "nina")
        assert not (await run(rt, "kill off", newcomer)).ok
        plain = AdminActor("slack", "UPLAIN", "C1")
        granted = await run(rt, "grant <@UNEW|nina> on-call this week", plain)
        assert granted.ok, granted.text
        assert (await run(rt, "kill off", newcomer)).ok
        admins = await run(rt, "admins", plain)
        assert "slack:UNEW" in admins.text and "on-call this week" in admins.text
        assert (await run(rt, "revoke slack:UNEW", newcomer)).ok, "admins may revoke (even themselves)"
        assert not (await run(rt, "kill on", newcomer)).ok
        cli = AdminActor("cli", "ops", "host-1")
        assert (await run(rt, "kill on", cli)).ok, "shell access is the CLI's authorisation"
    finally:
        await rt.aclose()


async def test_channel_targets(web_rt: Runtime) -> None:
    cases = [
        ("kill off <#C0CHAN01|general>", ADMIN, "slack:C0CHAN01"),
        ("kill off #C0CHAN02", ADMIN, "slack:C0CHAN02"),
        ("kill off here", ADMIN, "slack:COPS"),
        ("kill off slack:C0CHAN03", AdminActor("cli", "ops", "host"), "slack:C0CHAN03"),
        ("admin kill off here", TEAMS_ADMIN, "teams:19:ops@thread.tacv2"),
        ("<at>Deskmate</at> admin kill off teams:19:other@thread.tacv2", TEAMS_ADMIN, "teams:19:other@thread.tacv2"),
        ("kill off", ADMIN, "global"),
        ("kill off everywhere", ADMIN, "global"),
    ]
    for text, actor, scope in cases:
        reply = await run(web_rt, text, actor)
        assert reply.ok, (text, reply.text)
        async with web_rt.db.asession() as session:
            assert (await session.get(Switch, scope)) is not None, (text, scope)

    cli_here = await run(web_rt, "kill off here", AdminActor("cli", "ops", "host"))
    assert not cli_here.ok and "`here` only works in a chat channel" in cli_here.text
    unknown = await run(web_rt, "kill off #no-such-channel")
    assert not unknown.ok and "can't find a Slack channel" in unknown.text
    bad_mode = await run(web_rt, "kill sideways")
    assert not bad_mode.ok and "unknown mode" in bad_mode.text
    entries = await audit_log(web_rt)
    assert entries[-1].allowed and entries[-1].detail.startswith("error: unknown mode"), "failed attempts are audited"


async def test_a_channel_named_by_its_name_is_looked_up_in_slack(make_settings: Callable[..., Settings]) -> None:
    from bot.runtime import build_runtime

    async with start_fake_slack() as slack:
        slack._m_conversations_list = lambda args: {  # type: ignore[attr-defined]
            "ok": True, "channels": [{"id": "C0HR", "name": "hr-questions", "name_normalized": "hr-questions"}],
            "response_metadata": {"next_cursor": ""}}
        rt = await build_runtime(make_settings(admin_user_ids=ADMIN_IDS, slack_bot_token="xoxb-test",
                                               slack_api_url=slack.api_url), worker=False)
        try:
            reply = await run(rt, "kill retrieval-only #hr-questions")
            assert reply.ok, reply.text
            async with rt.db.asession() as session:
                assert (await session.get(Switch, "slack:C0HR")).mode == "retrieval-only"  # type: ignore[union-attr]
        finally:
            await rt.aclose()


async def test_global_retrieval_only_stops_llm_calls_and_on_restores_them(
    make_settings: Callable[..., Settings], fake_anthropic: Any
) -> None:
    async with running_stack(claude_settings(make_settings, fake_anthropic)) as stack:
        rt = stack.web_runtime
        assert (await run(rt, "kill retrieval-only")).ok
        row = await ask_in(rt, "C1")
        assert row.status == Status.ANSWERED and row.fallback and row.fallback_reason == "retrieval-only mode"
        assert fake_anthropic.message_requests == []
        assert (await run(rt, "kill on")).ok
        row = await ask_in(rt, "C1")
        assert not row.fallback and len(fake_anthropic.message_requests) == 1


async def test_a_channel_switch_cannot_loosen_the_global_one(web_rt: Runtime) -> None:
    await run(web_rt, "kill retrieval-only")
    await run(web_rt, "kill off here")
    async with web_rt.db.asession() as session:
        assert (await effective_mode(session, "slack", "COPS"))[0].value == "off"
        assert (await effective_mode(session, "slack", "CELSE"))[0].value == "retrieval-only"


async def test_promote_asks_the_gate_and_force_overrides_it_on_the_record(web_rt: Runtime) -> None:
    async with web_rt.db.asession() as session:
        await create_release(session, web_rt.settings, "r2", actor="test", prompt_template="Be terse.",
                             prompt_version="terse-1")
    seen: list[tuple[str, str]] = []

    def gate(session: Any, settings: Any, candidate: Any, current: Any) -> tuple[bool, str]:
        seen.append((candidate.name, current.name))
        return False, "answer accuracy 0.61 < 0.80 on golden/sample"

    register_gate(gate)
    try:
        refused = await run(web_rt, "promote r2")
        assert not refused.ok and "accuracy 0.61" in refused.text and "--force" in refused.text
        async with web_rt.db.asession() as session:
            assert (await active_release(session, web_rt.settings)).name == "initial"
        forced = await run(web_rt, "promote r2 --force")
        assert forced.ok and "promoted anyway" in forced.text
        assert seen == [("r2", "initial"), ("r2", "initial")]
        rolled = await run(web_rt, "rollback")
        assert rolled.ok and "`r2` → `initial`" in rolled.text
        assert len(seen) == 2, "rollback never asks the gate"
    finally:
        register_gate(None)
    async with web_rt.db.asession() as session:
        events = list((await session.exec(select(ReleaseEvent).order_by(col(ReleaseEvent.id)))).all())
    assert [(e.action, e.release_name, e.forced) for e in events] == [
        ("bootstrap", "initial", False), ("promote", "r2", True), ("rollback", "initial", False)]
    entries = await audit_log(web_rt)
    assert [(e.command, e.before, e.after) for e in entries] == [
        ("promote r2", "", ""), ("promote r2 --force", "initial", "r2"), ("rollback", "r2", "initial")]
    assert entries[0].detail.startswith("gate refused: answer accuracy")
    assert entries[1].detail.startswith("FORCED past the gate")


async def test_a_gate_returning_gateresult_or_raising(web_rt: Runtime) -> None:
    async with web_rt.db.asession() as session:
        await create_release(session, web_rt.settings, "r2", actor="test", notes="x")

    async def passing(*_: Any) -> GateResult:
        return GateResult(True, "eval ok: accuracy 0.92")

    def broken(*_: Any) -> GateResult:
        raise RuntimeError("eval store unreachable")

    register_gate(broken)
    try:
        reply = await run(web_rt, "promote r2")
        assert not reply.ok and "gate failed: RuntimeError" in reply.text
        register_gate(passing)
        reply = await run(web_rt, "promote r2")
        assert reply.ok and "`initial` → `r2`" in reply.text
    finally:
        register_gate(None)
    entries = await audit_log(web_rt)
    assert entries[-1].detail == "gate: eval ok: accuracy 0.92"


async def test_status_shows_the_figures_an_operator_checks(web_rt: Runtime) -> None:
    now = utcnow()
    rows = [
        dict(status="answered", fallback=False, cost_usd=0.02),
        dict(status="answered", fallback=True, fallback_reason="the AI model request failed: timeout"),
        dict(status="answered", fallback=True, fallback_reason="retrieval-only mode"),  # chosen, not suffered
        dict(status="error", error="boom"),
        dict(status="maintenance"),
    ]
    async with web_rt.db.asession() as session:
        for i, extra in enumerate(rows):
            session.add(Interaction(idempotency_key=f"k{i}", platform="slack", channel="C1", question="q",
                                    answered_at=now, release="initial", **extra))
        await session.commit()
        session.add(Feedback(interaction_id=1, user_hash="u1", platform="slack", label="up"))
        session.add(Feedback(interaction_id=2, user_hash="u1", platform="slack", label="down"))
        await session.commit()
    await run(web_rt, "kill off <#C0BAD|bad> wrong answers")
    reply = await run(web_rt, "status")
    text = reply.text
    assert reply.ok
    assert "`initial`" in text and "active since" in text
    assert "<#C0BAD>: **off** (by slack:UADMIN" in text and "wrong answers" in text
    assert "5 questions, 3 answered, 1 maintenance replies, 1 errors (20%)" in text
    assert "**LLM fallback rate (last hour):** 50% (1 of 2 LLM answers)" in text
    assert "👍 1 / 👎 1" in text
    assert "$0.02" in text and "no daily cap set" in text
    releases = await run(web_rt, "releases")
    assert "▶ `initial`" in releases.text and "5 answers, 👍 1 / 👎 1" in releases.text


async def test_unknown_commands_get_the_help_and_routing_helpers() -> None:
    assert is_admin_command("status") and is_admin_command("admin kill off") and is_admin_command("<@W111> releases")
    assert not is_admin_command("how do I reset my vpn")
    assert split_command("<at>Deskmate</at> admin   rollback  r1") == ["rollback", "r1"]


async def test_unknown_command_reply(web_rt: Runtime) -> None:
    reply = await run(web_rt, "frobnicate now")
    assert not reply.ok and "I don't know `frobnicate`" in reply.text and "`rollback [NAME]`" in reply.text
    empty = await run(web_rt, "")
    assert empty.ok and "Deskmate admin commands" in empty.text


async def test_a_word_that_is_not_a_channel_is_refused_rather_than_read_as_everywhere(web_rt: Runtime) -> None:
    await run(web_rt, "kill off")
    reply = await run(web_rt, "kill on general")
    assert not reply.ok and "`general` is not a channel" in reply.text and "kill on everywhere general" in reply.text
    async with web_rt.db.asession() as session:
        assert (await session.get(Switch, "global")).mode == "off"  # type: ignore[union-attr]
    assert (await run(web_rt, "kill on everywhere storm is over")).ok


async def test_force_survives_smart_punctuation(web_rt: Runtime) -> None:
    async with web_rt.db.asession() as session:
        await create_release(session, web_rt.settings, "r2", actor="test", notes="x")
    register_gate(lambda *_: (False, "no eval"))
    try:
        reply = await run(web_rt, "promote r2 —force")
        assert reply.ok and "promoted anyway" in reply.text
    finally:
        register_gate(None)
