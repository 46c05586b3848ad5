"""Canary releases through the real queue: the web side starts a canary with the admin command, questions go through
intake → Redis → the arq worker → the local Messages API fake, scripted 👍/👎 go through the one vote path, and the
worker's canary guard decides (after answers, and from its cron).

The arm of each conversation is a hash of its key salted with the canary's id, so a test can say beforehand which
threads the candidate will answer (:func:`playbooks.canary.bucket`) and compute from the statistics alone
(:func:`playbooks.canary_stats.compare`) after how many answers a worse candidate must be rolled back.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from bot.core.settings import Settings
from bot.core.types import Platform, Question, Status
from bot.llm import DEFAULT_PROMPT_TEMPLATE
from bot.runtime import Runtime
from feedback.models import Alert, AuditEntry, Canary, Interaction, ShadowAnswer
from feedback.releases import active_release
from playbooks.canary import CANDIDATE, STATE_KEY, VERSION_KEY, bucket, conversation_key, route_release
from playbooks.canary_stats import Sample, compare
from playbooks.killswitch import Mode
from playbooks.releases import create_release
from tests.playbooks.conftest import STRANGER, claude_settings, run
from tests.stack import running_stack, wait_final, worker_processes
from tests.waiting import wait_until

QUESTIONS = [
    "How much is the daily meal allowance when I travel?",
    "whats the per diem in the US",
    "am I allowed premium economy on the flight to toronto?",
    "lost the receipt for a dinner, can I still get reimbursed?",
    "vpn not working",
    "how long does IT have to get back to me on a P2 ticket",
]
CANDIDATE_MARKER = "Release marker: CANARY-CANDIDATE."
CHANNEL = "CLIVE"


async def make_candidate(rt: Runtime, name: str = "v-cand", *, marker: bool = False) -> None:
    """A release like the active one; with ``marker`` its prompt says so (visible in what the fake received)."""
    async with rt.db.asession() as session:
        await active_release(session, rt.settings)  # bootstrap "initial"
        changes: dict[str, Any] = {"notes": "canary candidate", "prompt_version": f"{name}-v1"}
        if marker:
            changes["prompt_template"] = f"{DEFAULT_PROMPT_TEMPLATE}\n{CANDIDATE_MARKER}"
        await create_release(session, rt.settings, name, actor="test", **changes)


async def ask(rt: Runtime, thread: str, i: int = 0, *, channel: str = CHANNEL) -> Interaction:
    """One question in ``thread`` through the real queue; returns the row once the answer job has finished
    (answer recorded, after-answer hooks — the canary's decision among them — run)."""
    question = Question(idempotency_key=f"test:{uuid.uuid4().hex}", platform=Platform.SLACK, workspace="T1",
                        channel=channel, thread=thread, user=f"U{i % 7}", text=QUESTIONS[i % len(QUESTIONS)],
                        channel_type="channel")
    submitted = await rt.intake.submit(question)
    assert submitted.enqueued and submitted.interaction_id is not None
    return await wait_final(rt.db, submitted.interaction_id, 60, redis=rt.redis)


async def vote(rt: Runtime, row: Interaction, label: str) -> None:
    assert row.id is not None
    await rt.votes.vote(interaction_id=row.id, user=f"UVOTER{row.id}", platform="slack", label=label)


async def canary_row(rt: Runtime) -> Canary:
    async with rt.db.asession() as session:
        row = (await session.exec(select(Canary).order_by(col(Canary.id).desc()))).first()
    assert row is not None
    return row


async def audit_entries(rt: Runtime, actor: str) -> list[AuditEntry]:
    async with rt.db.asession() as session:
        return list((await session.exec(select(AuditEntry).where(AuditEntry.actor == actor)
                                        .order_by(col(AuditEntry.id)))).all())


async def wait_state(rt: Runtime, state: str, timeout_s: float = 30) -> Canary:
    deadline = time.monotonic() + timeout_s
    while True:
        row = await canary_row(rt)
        if row.state == state:
            return row
        if time.monotonic() > deadline:
            raise TimeoutError(f"canary still {row.state}: {row.decision}")
        await asyncio.sleep(0.1)


def system_text(request: Any) -> str:
    system = request.body.get("system", [])
    return system if isinstance(system, str) else " ".join(b.get("text", "") for b in system)


def fast(make_settings: Callable[..., Settings], fake: Any, **extra: Any) -> Settings:
    """Claude via the fake; the canary decides at every look (no Redis rate limit) so the tests can count."""
    values: dict[str, Any] = {"canary_check_interval_s": 0, "guard_check_interval_s": 3600}
    values.update(extra)
    return claude_settings(make_settings, fake, **values)


def expected_rollback_after(arms: list[str], votes: list[str], alpha: float, margin: float) -> int:
    """After how many answers the 👎 comparison alone is significantly worse, replaying the script."""
    down = {"baseline": 0, "candidate": 0}
    rated = {"baseline": 0, "candidate": 0}
    for n, (arm, label) in enumerate(zip(arms, votes), start=1):
        rated[arm] += 1
        down[arm] += label == "down"
        comparison = compare("downvote", Sample.rate(down["baseline"], rated["baseline"]),
                             Sample.rate(down["candidate"], rated["candidate"]), margin=margin, alpha=alpha / 5)
        if comparison.worse:
            return n
    raise AssertionError("the script never makes the candidate significantly worse")


async def test_a_worse_candidate_is_rolled_back_automatically_within_the_expected_number_of_answers(
    make_settings: Callable[..., Settings], fake_anthropic: Any, open_gate: None,
) -> None:
    # the script sets the votes only: the answers' latency is the machine's noise (a loaded CI machine once made the
    # candidate's answers slower and the latency comparison decided first), so its margin is out of reach here
    margins = Settings.model_fields["canary_margins"].default_factory() | {"latency": 1_000.0}  # type: ignore[misc]
    settings = fast(make_settings, fake_anthropic, canary_min_answers=10_000, canary_margins=margins)
    async with running_stack(settings) as stack:
        rt = stack.web_runtime
        await make_candidate(rt, "v-bad", marker=True)
        reply = await run(rt, "canary v-bad --share 50")
        assert reply.ok, reply.text
        canary = await canary_row(rt)
        assert canary.state == "running" and canary.baseline == "initial" and canary.share == 50
        assert canary.id is not None

        # the script: the candidate's answers all get 👎, the baseline's one in ten
        threads = [f"1700000000.{i:06d}" for i in range(120)]
        arms = ["candidate" if bucket(canary.id, conversation_key("slack", CHANNEL, t)) < 50 else "baseline"
                for t in threads]
        seen = {"baseline": 0, "candidate": 0}
        script = []
        for arm in arms:
            seen[arm] += 1
            script.append("down" if arm == "candidate" or seen[arm] % 10 == 0 else "up")
        expected = expected_rollback_after(arms, script, settings.canary_alpha, settings.canary_margins["downvote"])

        answered = 0  # answers routed under the canary
        for i, thread in enumerate(threads):
            row = await ask(rt, thread, i)
            if row.arm is None:
                assert (await canary_row(rt)).state == "rolled_back"
                break
            answered += 1
            assert row.arm == arms[i], "the arm is the hash of the conversation, as predicted"
            assert row.release == ("v-bad" if row.arm == CANDIDATE else "initial")
            assert row.status == Status.ANSWERED
            await vote(rt, row, script[i])
        canary = await canary_row(rt)
        assert canary.state == "rolled_back", canary.decision
        # decided right after the vote that tipped it (the web process decides after votes)
        assert answered <= expected, f"rolled back after {answered} answers; the test says {expected}"
        assert canary.detail["verdict"]["metric"] == "downvote"
        assert "👎" in canary.decision and "always-valid" in canary.decision

        # everyone is back on the active release, the decision is audited and alerted with the runbook
        after = await ask(rt, threads[arms.index("candidate")], 0)
        assert after.release == "initial" and after.arm is None
        async with rt.db.asession() as session:
            assert (await active_release(session, rt.settings)).name == "initial"
            alerts = list((await session.exec(select(Alert))).all())
        [entry] = [e for e in await audit_entries(rt, "canary-guard") if "rolled back" in e.command]
        assert "👎" in entry.detail and entry.after == "canary v-bad rolled_back"
        [alert] = [a for a in alerts if a.kind.startswith("canary-rollback")]
        assert "canary-rolled-back.md" in alert.message and "ROLLED BACK" in alert.message
        status = await run(rt, "canary status")
        assert status.ok and "rolled_back" in status.text and "👎 per rated answer" in status.text
        assert await rt.redis.get(STATE_KEY) is None, "Redis no longer announces a running canary"


async def test_an_equivalent_candidate_is_promoted_once_it_has_its_minimum_answers(
    make_settings: Callable[..., Settings], fake_anthropic: Any, open_gate: None,
) -> None:
    # margins a short test can reach (the defaults need hundreds of answers: docs/playbooks.md)
    margins = {"downvote": 0.6, "error": 0.35, "fallback": 0.35, "latency": 3.0, "cost": 1.0}
    settings = fast(make_settings, fake_anthropic, canary_min_answers=15, canary_margins=margins)
    async with running_stack(settings) as stack:
        rt = stack.web_runtime
        await make_candidate(rt, "v-same")
        assert (await run(rt, "canary v-same --share 50")).ok
        n = 0
        while (await canary_row(rt)).state == "running":
            assert n < 150, f"not promoted after {n} answers: {(await canary_row(rt)).decision}"
            row = await ask(rt, f"1700000001.{n:06d}", n)
            if row.arm is not None:
                await vote(rt, row, "down" if n % 5 == 0 else "up")  # the same script whatever the arm
            n += 1
        canary = await canary_row(rt)
        assert canary.state == "promoted", canary.decision
        figures = canary.detail["arms"]
        assert figures["candidate"]["answers"] >= 15
        assert all(c["not_worse"] for c in canary.detail["verdict"]["comparisons"])
        async with rt.db.asession() as session:
            assert (await active_release(session, rt.settings)).name == "v-same"
        assert (await ask(rt, "1700000009.000001", 1)).release == "v-same", "everyone gets the promoted release"
        [entry] = [e for e in await audit_entries(rt, "canary-guard") if e.command == "promote v-same (canary)"]
        assert entry.before == "initial" and entry.after == "v-same"


async def test_an_inconclusive_canary_ends_after_its_maximum_duration(
    make_settings: Callable[..., Settings], fake_anthropic: Any, open_gate: None,
) -> None:
    async with running_stack(fast(make_settings, fake_anthropic)) as stack:
        rt = stack.web_runtime
        await make_candidate(rt, "v-maybe")
        assert (await run(rt, "canary v-maybe --share 50 --max-hours 0.0005")).ok  # 1.8 s
        for i in range(3):
            await ask(rt, f"1700000002.{i:06d}", i)
        # nothing is answered any more: the worker's cron ends it
        canary = await wait_state(rt, "inconclusive", timeout_s=30)
        assert "INCONCLUSIVE" in canary.decision and "initial" in canary.decision
        async with rt.db.asession() as session:
            assert (await active_release(session, rt.settings)).name == "initial"
        assert any("inconclusive" in e.command for e in await audit_entries(rt, "canary-guard"))


async def test_conversations_keep_their_release_and_excluded_channels_and_the_kill_switch_come_first(
    make_settings: Callable[..., Settings], fake_anthropic: Any, open_gate: None,
) -> None:
    async with running_stack(fast(make_settings, fake_anthropic, canary_min_answers=10_000)) as stack:
        rt = stack.web_runtime
        await make_candidate(rt, "v-sticky", marker=True)
        before = await ask(rt, "1700000003.000000", 0)  # a conversation begun before the canary
        reply = await run(rt, "canary v-sticky --share 50 --exclude <#CVIP|vip>")
        assert reply.ok and "slack:CVIP" in reply.text, reply.text

        threads = [f"1700000003.{i:06d}" for i in range(1, 9)]
        firsts = {t: await ask(rt, t, i) for i, t in enumerate(threads)}
        assert {r.arm for r in firsts.values()} == {"baseline", "candidate"}, "both arms get conversations"
        for i, thread in enumerate(threads):
            follow_up = await ask(rt, thread, i + 1)
            assert (follow_up.arm, follow_up.release) == (firsts[thread].arm, firsts[thread].release)
            prompt = system_text(fake_anthropic.message_requests[-1])
            assert (CANDIDATE_MARKER in prompt) == (follow_up.arm == CANDIDATE), "the candidate's prompt answered"
        again = await ask(rt, "1700000003.000000", 1)
        assert again.release == "initial" and again.arm is None, "a thread begun before the canary stays as it was"
        assert before.arm is None

        candidate_thread = next(t for t, r in firsts.items() if r.arm == CANDIDATE)
        baseline_thread = next(t for t, r in firsts.items() if r.arm == "baseline")

        # an excluded channel never sees the candidate
        vip = [await ask(rt, t, 0, channel="CVIP") for t in threads]
        assert {(r.release, r.arm) for r in vip} == {("initial", None)}

        # the kill-switch comes first: retrieval-only / off answer without the candidate, and are not counted
        assert (await run(rt, "kill retrieval-only")).ok
        row = await ask(rt, candidate_thread, 2)
        assert row.release == "initial" and row.arm is None and row.fallback and not row.model
        assert (await run(rt, "kill off")).ok
        row = await ask(rt, candidate_thread, 3)
        assert row.status == Status.MAINTENANCE and row.arm is None
        assert (await run(rt, "kill on")).ok
        row = await ask(rt, candidate_thread, 4)
        assert row.arm == CANDIDATE and row.release == "v-sticky", "switch on again: the conversation's arm again"
        assert (await ask(rt, baseline_thread, 4)).arm == "baseline"

        # non-admins cannot start or stop canaries, and the attempt is audited
        refused = await run(rt, "canary stop", STRANGER)
        assert not refused.ok and (await canary_row(rt)).state == "running"
        stopped = await run(rt, "canary stop enough data")
        assert stopped.ok and (await canary_row(rt)).state == "stopped"
        assert (await ask(rt, candidate_thread, 5)).release == "initial"
        async with rt.db.asession() as session:
            commands = [(e.command, e.allowed) for e in (await session.exec(select(AuditEntry))).all()]
        assert ("canary v-sticky --share 50 --exclude <#CVIP|vip>", True) in commands
        assert ("canary stop", False) in commands and ("canary stop enough data", True) in commands


async def test_two_worker_processes_route_every_conversation_the_same_way(
    make_settings: Callable[..., Settings], fake_anthropic: Any, open_gate: None, tmp_path: Path,
) -> None:
    """Two `deskmate worker` processes answer the same threads: each conversation gets the same arm whichever
    worker answers it, and both agree with the routing function run here (a third process)."""
    settings = claude_settings(make_settings, fake_anthropic, canary_min_answers=10_000)
    async with running_stack(settings, worker=False) as stack:
        rt = stack.web_runtime
        await make_candidate(rt, "v-two")
        assert (await run(rt, "canary v-two --share 30")).ok
        canary = await canary_row(rt)
        version = int(await rt.redis.get(VERSION_KEY) or 0)
        published = json.loads(await rt.redis.get(STATE_KEY) or "{}")
        assert version >= 1 and published["candidate"] == "v-two" and published["share"] == 30
        async with worker_processes(settings, 2, tmp_path) as workers:
            threads = [f"1700000004.{i:06d}" for i in range(12)]
            rows = []
            for round_ in range(3):
                submitted = []
                for i, thread in enumerate(threads):
                    question = Question(idempotency_key=f"test:{uuid.uuid4().hex}", platform=Platform.SLACK,
                                        workspace="T1", channel=CHANNEL, thread=thread, user="U1",
                                        text=QUESTIONS[(i + round_) % len(QUESTIONS)], channel_type="channel")
                    result = await rt.intake.submit(question)
                    assert result.interaction_id is not None
                    submitted.append(result.interaction_id)
                rows += [await wait_final(rt.db, i, 120) for i in submitted]
            handled = [w.handled() for w in workers]
        assert all(handled), "both workers answered questions"
        by_thread: dict[str, set[tuple[str | None, str | None]]] = {}
        for row in rows:
            by_thread.setdefault(row.thread, set()).add((row.arm, row.release))
        assert all(len(v) == 1 for v in by_thread.values()), by_thread
        assert canary.id is not None
        for thread, ((arm, release),) in by_thread.items():
            expected = "candidate" if bucket(canary.id, conversation_key("slack", CHANNEL, thread)) < 30 else "baseline"
            assert arm == expected and release == ("v-two" if arm == CANDIDATE else "initial")
        # this process, the routing function, and the workers agree
        async with rt.db.asession() as session:
            route = await route_release(session, rt.settings, platform="slack", channel=CHANNEL, thread=threads[0],
                                        idempotency_key="x", interaction_id=None, mode=Mode.ON)
        assert route.arm == by_thread[threads[0]].pop()[0]


async def test_a_shadow_canary_answers_in_the_background_within_its_budget_and_compares(
    make_settings: Callable[..., Settings], fake_anthropic: Any,
) -> None:
    settings = fast(make_settings, fake_anthropic)
    async with running_stack(settings) as stack:
        rt = stack.web_runtime
        await make_candidate(rt, "v-risky", marker=True)
        reply = await run(rt, "canary v-risky --shadow --share 100 --budget 0.0000001")
        assert reply.ok and "never shown" in reply.text, reply.text
        first = await ask(rt, "1700000005.000001", 0)
        assert first.release == "initial" and first.arm == "shadow", "the live answer is the active release's"
        async with rt.db.asession() as session:
            async def shadow_answers() -> list[ShadowAnswer]:
                return list((await session.exec(select(ShadowAnswer))).all())

            shadows = await wait_until(shadow_answers, timeout_s=30, interval_s=0.1, what="a shadow answer recorded")
        [shadow] = shadows
        assert shadow.interaction_id == first.id and shadow.release == "v-risky" and shadow.error is None
        assert shadow.cost_usd > 0 and shadow.overlap is not None and 0 <= shadow.overlap <= 1
        assert shadow.citation_precision == 1.0, "it cites what the live answer found"
        assert shadow.judge_reason, "the judge was asked (an API key is set)"
        prompts = [system_text(r) for r in fake_anthropic.message_requests]
        assert sum(CANDIDATE_MARKER in p for p in prompts) == 1, "the candidate was asked once, in the background"
        # the budget is spent: the next sampled question gets no background answer and the canary completes
        second = await ask(rt, "1700000005.000002", 1)
        assert second.release == "initial"
        canary = await wait_state(rt, "completed")
        assert "cost budget" in canary.decision and "answer overlap" in canary.decision
        async with rt.db.asession() as session:
            assert len(list((await session.exec(select(ShadowAnswer))).all())) == 1
        status = await run(rt, "canary status")
        assert "Shadow" in status.text and "1 background answers" in status.text


async def test_the_dashboard_starts_shows_and_stops_a_canary_through_the_admin_handler(
    make_settings: Callable[..., Settings], fake_anthropic: Any, open_gate: None,
) -> None:
    token = "dash-token-canary"
    settings = fast(make_settings, fake_anthropic, dashboard_token=token, canary_min_answers=10_000)
    headers = {"Authorization": f"Bearer {token}"}
    async with running_stack(settings) as stack:
        rt, client = stack.web_runtime, stack.client
        await make_candidate(rt, "v-dash")
        started = await client.post("/dashboard/actions/canary", headers=headers,
                                     json={"action": "start", "release": "v-dash", "share": "50",
                                           "exclude": "slack:CQUIET"})
        assert started.status_code == 200 and started.json()["ok"], started.text
        for i in range(6):
            row = await ask(rt, f"1700000006.{i:06d}", i)
            await vote(rt, row, "up" if i % 2 else "down")
        api = (await client.get("/dashboard/api/canary", headers=headers)).json()
        assert api["canary"]["state"] == "running" and api["canary"]["excluded"] == ["slack:CQUIET"]
        arms = api["arms"]
        assert arms["baseline"]["answers"] + arms["candidate"]["answers"] == 6
        assert arms["candidate"]["down_rate_rated"]["ci"] is not None or arms["candidate"]["rated"] == 0
        assert [c["metric"] for c in api["verdict"]["comparisons"]] == ["downvote", "error", "fallback", "latency",
                                                                        "cost"]
        page = (await client.get("/dashboard", headers=headers)).text
        assert 'id="canary"' in page and "v-dash" in page and "👎 per rated answer" in page
        assert "Sequential test" in page and 'id="canary-stop-form"' in page
        stopped = await client.post("/dashboard/actions/canary", headers=headers,
                                    json={"action": "stop", "reason": "seen enough"})
        assert stopped.json()["ok"], stopped.text
        assert (await canary_row(rt)).state == "stopped"
        page = (await client.get("/dashboard", headers=headers)).text
        assert 'data-state="stopped"' in page and "seen enough" in page and 'id="canary-form"' in page
        async with rt.db.asession() as session:
            entries = list((await session.exec(select(AuditEntry).where(
                col(AuditEntry.platform) == "dashboard"))).all())
        assert [e.command for e in entries] == ["canary v-dash --share 50 --exclude slack:CQUIET",
                                                "canary stop seen enough"]


async def test_slack_slash_command_and_teams_admin_words_run_the_canary_command(
    make_settings: Callable[..., Settings], fake_anthropic: Any, open_gate: None,
) -> None:
    from playbooks.admin import is_admin_command, split_command
    from tests.fakes.slack_api import start_fake_slack
    from tests.playbooks.test_slack_e2e import NOISY, OPS, OUTSIDER, QUIET, TRAVEL, command, mention_and_wait, \
        slack_values

    assert is_admin_command("<at>Deskmate</at> admin canary v2 --share 10")
    assert split_command("<at>Deskmate</at> admin canary v2 --share 10") == ["canary", "v2", "--share", "10"]
    async with start_fake_slack() as slack_api:
        slack_api.channels.update({NOISY: "public", QUIET: "public", OPS: "private"})
        settings = make_settings(**slack_values(slack_api, anthropic_api_key="sk-test",
                                                anthropic_base_url=fake_anthropic.url, llm_max_retries=0,
                                                canary_min_answers=10_000))
        async with running_stack(settings) as stack:
            await make_candidate(stack.web_runtime, "v-slack", marker=True)
            refused = await command(stack, slack_api, "canary v-slack --share 100", user=OUTSIDER, channel=QUIET,
                                    channel_name="quiet")
            assert "only Deskmate admins" in refused
            reply = await command(stack, slack_api, f"canary v-slack —share 100 --exclude <#{QUIET}|quiet>")
            assert "answers 100% of conversations" in reply and f"slack:{QUIET}" in reply, reply
            noisy = await mention_and_wait(stack, TRAVEL, NOISY)
            quiet = await mention_and_wait(stack, TRAVEL, QUIET)
            assert (noisy.release, noisy.arm) == ("v-slack", CANDIDATE)
            assert (quiet.release, quiet.arm) == ("initial", None), "the excluded channel keeps the active release"
            delivered = {c.args.get("channel") for c in slack_api.calls_to("chat.update")}
            assert {NOISY, QUIET} <= delivered, "both answers reached Slack"
            assert "Canary:* `v-slack` on 100% of conversations" in await command(stack, slack_api, "status")
            assert "v-slack" in await command(stack, slack_api, "canary status")
            assert "stopped by slack:" in await command(stack, slack_api, "canary stop")


async def test_two_admins_starting_a_canary_at_the_same_instant_get_one_canary(
        web_rt: Runtime, open_gate: None) -> None:
    rt = web_rt
    await make_candidate(rt, "v-one")
    await make_candidate(rt, "v-two")
    # both pass "is a canary running?" before either is stored (the gate runs in between)
    replies = await asyncio.gather(run(rt, "canary v-one --share 10"), run(rt, "canary v-two --share 10"))
    assert sorted(r.ok for r in replies) == [False, True], [r.text for r in replies]
    refused = next(r for r in replies if not r.ok)
    assert "already running" in refused.text or "started meanwhile" in refused.text
    async with rt.db.asession() as session:
        running = (await session.exec(select(Canary).where(col(Canary.state) == "running"))).all()
    assert len(running) == 1
    # and the database itself refuses a second running canary, whoever writes it
    async with rt.db.asession() as session:
        session.add(Canary(candidate="v-two", baseline="initial", started_by="someone else"))
        with pytest.raises(IntegrityError):
            await session.commit()
