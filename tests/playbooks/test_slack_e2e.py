"""The issue's must-show list, end to end through the Slack endpoint with signed slash commands.

Slack is the local fake Web API (tests/fakes/slack_api.py); requests to ``POST /slack/events`` are signed with
HMAC v0 exactly as Slack signs them; questions arrive as signed ``app_mention`` events; answers are read back
from the database and from what the worker posted to the fake Slack.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from bot.core.settings import Settings
from bot.core.types import Status
from feedback.models import AuditEntry, Interaction, Switch
from tests.bot.slack.conftest import HUMAN, SIGNING_SECRET, SlackClient, mention, sign, slash_command
from tests.conftest import settings_for
from tests.fakes.slack_api import FakeSlack, start_fake_slack
from tests.playbooks.conftest import (
    NEW_MARKER,
    OLD_MARKER,
    QUESTION,
    create_old_and_new_releases,
    passages_text,
    system_prompt,
)
from tests.stack import Stack, running_stack

NOISY, QUIET, OPS = "C0NOISY", "C0QUIET", "C0OPS"
OUTSIDER = "W999"
TRAVEL = "How much is the daily meal allowance when I travel?"


@pytest.fixture
async def slack_api() -> AsyncIterator[FakeSlack]:
    async with start_fake_slack() as fake:
        fake.channels.update({NOISY: "public", QUIET: "public", OPS: "private"})
        yield fake


def slack_values(slack_api: FakeSlack, **extra: Any) -> dict[str, Any]:
    return {"slack_bot_token": "xoxb-test-token", "slack_signing_secret": SIGNING_SECRET,
            "slack_api_url": slack_api.api_url, "admin_user_ids": [f"slack:{HUMAN}"], **extra}


async def command(stack: Stack, slack_api: FakeSlack, text: str, *, user: str = HUMAN, channel: str = OPS,
                  channel_name: str = "ops") -> str:
    """Send a signed `/deskmate TEXT` and return the ephemeral reply posted to its response_url."""
    name = f"r{len(slack_api.calls)}-{len(slack_api.calls_to('response_url'))}"
    before = len(slack_api.calls_to("response_url"))
    form = slash_command(text, response_url=slack_api.response_url(name), channel=channel, channel_name=channel_name,
                         user=user)
    response = await SlackClient(stack.client).command(form)
    assert response.status_code == 200, response.text
    reply = await slack_api.wait_for("response_url", count=before + 1)
    assert reply.args["response_type"] == "ephemeral"
    return str(reply.args.get("text", ""))


async def mention_and_wait(stack: Stack, text: str, channel: str) -> Interaction:
    """A signed app_mention in ``channel``; returns the recorded, final interaction."""
    async with stack.db.asession() as session:
        known = {r.id for r in (await session.exec(select(Interaction))).all()}
    response = await SlackClient(stack.client).event(mention(text, channel=channel))
    assert response.status_code == 200
    for _ in range(400):
        async with stack.db.asession() as session:
            rows = [r for r in (await session.exec(select(Interaction).order_by(col(Interaction.id)))).all()
                    if r.id not in known]
        if rows:
            return await stack.wait_final(rows[0].id, 180)
        import asyncio

        await asyncio.sleep(0.05)
    raise AssertionError("the mention was not recorded")


async def audit(stack: Stack) -> list[AuditEntry]:
    async with stack.db.asession() as session:
        return list((await session.exec(select(AuditEntry).order_by(col(AuditEntry.id)))).all())


async def test_admin_kills_one_channel_and_it_gets_the_maintenance_reply_while_another_is_answered(
    make_settings: Callable[..., Settings], slack_api: FakeSlack,
) -> None:
    async with running_stack(make_settings(**slack_values(slack_api))) as stack:
        reply = await command(stack, slack_api, f"kill off <#{NOISY}|noisy> wrong payroll answers")
        assert "off" in reply and "maintenance" in reply

        noisy = await mention_and_wait(stack, TRAVEL, NOISY)
        quiet = await mention_and_wait(stack, TRAVEL, QUIET)
        assert noisy.status == Status.MAINTENANCE and quiet.status == Status.ANSWERED
        delivered = {c.args.get("channel"): c.text_of_blocks for c in slack_api.calls_to("chat.update")}
        assert stack.settings.maintenance_message[:40] in delivered[NOISY]
        assert "[1]" in delivered[QUIET], "the other channel still gets a cited answer"

        status = await command(stack, slack_api, "status")
        assert NOISY in status and "off" in status

    entries = [e for e in await audit(stack) if e.command.startswith("kill")]
    assert [(e.actor.split(" ")[0], e.where, e.allowed, e.before, e.after) for e in entries] == [
        (f"slack:{HUMAN}", f"slack:{OPS}", True, f"slack:{NOISY}=on", f"slack:{NOISY}=off")]


async def test_a_non_admins_kill_through_slack_is_refused_and_audited(
    make_settings: Callable[..., Settings], slack_api: FakeSlack,
) -> None:
    async with running_stack(make_settings(**slack_values(slack_api)), worker=False) as stack:
        reply = await command(stack, slack_api, "kill off", user=OUTSIDER, channel=QUIET, channel_name="quiet")
        assert "only Deskmate admins" in reply
        async with stack.db.asession() as session:
            assert (await session.exec(select(Switch))).all() == []
        [entry] = await audit(stack)
        assert entry.allowed is False and entry.actor.startswith(f"slack:{OUTSIDER}")
        assert entry.where == f"slack:{QUIET}" and entry.command == "kill off" and entry.detail == "not an admin"

        # a forged request (bad signature) never reaches the handler, and so is not even audited
        form = slash_command("kill off", response_url=slack_api.response_url("forged"), user=HUMAN)
        forged = await SlackClient(stack.client).post_raw(form, "application/x-www-form-urlencoded",
                                                          sign(form, secret="not-the-secret"))
        assert forged.status_code == 401
        assert len(await audit(stack)) == 1


async def test_the_budget_cap_flips_the_mode_to_retrieval_only(
    make_settings: Callable[..., Settings], slack_api: FakeSlack, fake_anthropic: Any,
) -> None:
    settings = make_settings(**slack_values(slack_api, anthropic_api_key="sk-test",
                                            anthropic_base_url=fake_anthropic.url, llm_max_retries=0,
                                            daily_budget_usd=0.001, admin_channel=OPS))
    async with running_stack(settings) as stack:
        first = await mention_and_wait(stack, TRAVEL, QUIET)
        assert not first.fallback and first.cost_usd > 0.001
        alert = await slack_api.wait_for("chat.postMessage", channel=OPS)
        assert "Daily LLM budget reached" in alert.args["text"]

        budget = await command(stack, slack_api, "budget")
        assert "retrieval-only" in budget
        status = await command(stack, slack_api, "status")
        assert "retrieval-only" in status and "budget guard" in status

        second = await mention_and_wait(stack, TRAVEL, QUIET)
        assert second.fallback and second.fallback_reason == "retrieval-only mode"
        assert len(fake_anthropic.message_requests) == 1


async def test_rollback_through_slack_changes_the_next_answer_in_a_separately_running_worker(
    two_version_data_dir: Path, tmp_path: Path, redis_url: str, slack_api: FakeSlack, fake_anthropic: Any,
    worker_process: Callable[[Settings], subprocess.Popen[bytes]],
) -> None:
    settings = settings_for(two_version_data_dir, database_url=f"sqlite:///{tmp_path / 'deskmate.db'}",
                            redis_url=redis_url, anthropic_base_url=fake_anthropic.url, anthropic_api_key="sk-test",
                            llm_max_retries=0, web_port=0, **slack_values(slack_api))
    async with running_stack(settings, worker=False) as stack:  # the web process only
        await create_old_and_new_releases(stack.web_runtime)
        worker_process(settings)  # `deskmate worker`, another OS process

        first = await mention_and_wait(stack, QUESTION, QUIET)
        assert first.release == "v-new" and first.index_version == 2
        assert NEW_MARKER in system_prompt(fake_anthropic.message_requests[-1])
        assert "QX-4471" in passages_text(fake_anthropic.message_requests[-1])

        reply = await command(stack, slack_api, "rollback")
        assert "v-new" in reply and "v-old" in reply

        second = await mention_and_wait(stack, QUESTION, QUIET)
        request = fake_anthropic.message_requests[-1]
        assert second.release == "v-old" and second.index_version == 1
        assert OLD_MARKER in system_prompt(request) and NEW_MARKER not in system_prompt(request)
        assert "QX-4471" not in passages_text(request), "the kept index v1 is used again, without a rebuild"
        delivered = [c for c in slack_api.calls_to("chat.update") if c.args.get("channel") == QUIET]
        assert len(delivered) == 2, "the separate worker delivered both answers to Slack"

    [entry] = [e for e in await audit(stack) if e.command == "rollback"]
    assert (entry.before, entry.after, entry.allowed) == ("v-new", "v-old", True)
