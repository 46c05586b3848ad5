"""The promotion quality gate: a broken candidate is refused with the metrics that regressed; --force is audited."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlmodel import col, select
from typer.testing import CliRunner

from bot import cli as bot_cli
from bot.cli import feedback as feedback_cli
from bot.core.settings import Settings
from feedback.db import Database, get_database
from feedback.gate import find_regressions, promotion_gate, tolerances
from feedback.models import AuditEntry, EvalRun, ReleaseEvent
from playbooks.admin import AdminActor, AdminContext, handle_admin_command
from playbooks.releases import GateRefused, create_release, promote
from feedback.releases import active_release, get_release
from tests.fakes.anthropic_server import Reply
from tests.feedback.helpers import evaluate, gate_report, promotion_check


async def make_release(db: Database, settings: Settings, name: str, **changes) -> None:
    async with db.asession() as session:
        await active_release(session, settings)  # "initial" exists and is active
        await create_release(session, settings, name, actor="test", **changes)


async def active_name(db: Database, settings: Settings) -> str:
    async with db.asession() as session:
        return (await active_release(session, settings)).name


async def test_a_candidate_that_retrieves_nothing_is_refused_with_the_regressed_metrics(settings, db) -> None:
    await make_release(db, settings, "blind", retrieval_k=0)
    ok, message = await promotion_check(settings, "blind")
    assert ok is False
    assert "'blind' is worse than the active 'initial'" in message
    for regressed in ("retrieval recall@k 1.000 → 0.000", "citation coverage 1.000 → 0.000",
                      "answered answerable 1.000 → 0.000", "answer token f1"):
        assert regressed in message, message
    assert "declined unanswerable" not in message, "declining everything does not hurt that metric"
    async with db.asession() as session:
        runs = (await session.exec(select(EvalRun).order_by(col(EvalRun.id)))).all()
    assert [(r.release_name, r.metrics["meta"]["kind"]) for r in runs] == [("initial", "gate"), ("blind", "gate")]


async def test_an_equivalent_candidate_passes(settings, db) -> None:
    await make_release(db, settings, "same", notes="same settings, new name")
    ok, message = await promotion_check(settings, "same")
    assert ok, message
    assert "'same' is not worse than 'initial'" in message and "retrieval recall@k 1.000" in message


async def test_promote_uses_stored_runs_refuses_and_force_is_recorded(settings, db) -> None:
    await make_release(db, settings, "blind", retrieval_k=0)
    async with db.asession() as session:
        blind, initial = await get_release(session, "blind"), await get_release(session, "initial")
        ok, message = await promotion_gate(session, settings, blind, initial)
    assert not ok and "run `deskmate eval gate blind`" in message, "no stored evaluation yet"

    report = await gate_report(settings, "blind")  # what `deskmate eval gate blind` does
    assert not report.ok and {r.key for r in report.regressions} >= {"recall_at_k", "citation_coverage"}
    async with db.asession() as session:
        with pytest.raises(GateRefused) as refused:
            await promote(session, settings, "blind", actor="cli:alice")
    assert "retrieval recall@k 1.000 → 0.000" in str(refused.value) and "--force" in str(refused.value)
    assert await active_name(db, settings) == "initial"

    rt = AdminContext(settings=settings, db=db)
    actor = AdminActor(platform="cli", user_id="alice", channel="host")
    reply = await handle_admin_command(rt, actor, "promote blind")
    assert not reply.ok and "promotion gate refused" in reply.text
    reply = await handle_admin_command(rt, actor, "promote blind --force")
    assert reply.ok, reply.text
    assert await active_name(db, settings) == "blind"
    async with db.asession() as session:
        event = (await session.exec(select(ReleaseEvent).order_by(col(ReleaseEvent.id).desc()))).first()
        audit = list((await session.exec(select(AuditEntry).order_by(col(AuditEntry.id)))).all())
    assert event is not None and (event.release_name, event.action, event.forced) == ("blind", "promote", True)
    assert [a.command for a in audit] == ["promote blind", "promote blind --force"]
    assert audit[0].detail.startswith("gate refused:") and "recall@k" in audit[0].detail
    assert audit[1].detail.startswith("FORCED past the gate:") and "citation coverage" in audit[1].detail


async def test_a_prompt_that_never_cites_is_refused(make_settings, fake_anthropic, small_golden: Path) -> None:
    settings: Settings = make_settings(anthropic_api_key="test-key", anthropic_base_url=fake_anthropic.url,
                                       llm_max_retries=0, eval_judge=False, gate_dataset=small_golden)
    db = get_database(settings.database_url_resolved())
    db.migrate()
    await make_release(db, settings, "uncited", prompt_template="Answer from what you know. Never cite sources.",
                       prompt_version="uncited-v1")
    await evaluate(settings, small_golden, [None], kind="gate")  # the active release: cited answers
    fake_anthropic.always(Reply.plain("It is about 50 dollars a day, I think."))  # the new prompt: no citations
    await evaluate(settings, small_golden, ["uncited"], kind="gate")
    async with db.asession() as session:
        uncited, initial = await get_release(session, "uncited"), await get_release(session, "initial")
        ok, message = await promotion_gate(session, settings, uncited, initial)
    assert not ok
    assert "citation coverage 1.000 → 0.000" in message and "citation precision 1.000 → 0.000" in message


def test_tolerances_are_settings() -> None:
    active = {"recall_at_k": 0.9, "answer_f1": 0.5, "latency_p95_ms": 100.0, "cost_per_answer_usd": 0.01}
    candidate = {"recall_at_k": 0.85, "answer_f1": 0.49, "latency_p95_ms": 200.0, "cost_per_answer_usd": 0.02}
    strict = Settings(_env_file=None, gate_tolerances={"recall_at_k": 0.0}, gate_latency_slack_ms=0)
    assert {r.key for r in find_regressions(strict, active, candidate)} == {"recall_at_k", "latency_p95_ms",
                                                                            "cost_per_answer_usd"}
    lenient = Settings(_env_file=None, gate_tolerances={"recall_at_k": 0.1}, gate_cost_increase=1.5)
    assert find_regressions(lenient, active, candidate) == []
    with pytest.raises(ValueError, match="unknown metrics: speed"):
        tolerances(Settings(_env_file=None, gate_tolerances={"speed": 1}))


async def test_gate_off(make_settings, db) -> None:
    settings = make_settings(gate_enabled=False)
    assert await promotion_check(settings, "anything") == (True, "the quality gate is off (DESKMATE_GATE_ENABLED=false)")


async def test_eval_gate_command_promotes_with_force(settings: Settings, db, monkeypatch) -> None:
    monkeypatch.setattr(feedback_cli, "get_settings", lambda: settings)
    monkeypatch.setattr(bot_cli, "get_settings", lambda: settings)
    await make_release(db, settings, "blind", retrieval_k=0)
    runner = CliRunner()
    refused = await asyncio.to_thread(runner.invoke, bot_cli.app, ["eval", "gate", "blind"])
    assert refused.exit_code == 1 and "Gate refused" in refused.stdout
    forced = await asyncio.to_thread(runner.invoke, bot_cli.app, ["eval", "gate", "blind", "--promote", "--force"])
    assert forced.exit_code == 0, forced.output
    assert "promoted anyway with --force" in " ".join(forced.stdout.split())
    assert await active_name(db, settings) == "blind"
