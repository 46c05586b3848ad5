"""Operators' per-channel policy (``deskmate slack channel``): applied by intake and the worker, audited."""

from __future__ import annotations

from sqlmodel import select

from bot.slack.channels import UNSET, configure_channel, describe, list_policies
from feedback.models import AuditEntry
from tests.bot.slack.conftest import ALL, SlackClient, channel_message
from tests.fakes.slack_api import FakeSlack
from tests.stack import Stack


async def test_channel_policy_from_the_cli_functions_is_audited_and_applied(
        slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack) -> None:
    before, after = await configure_channel(slack_stack.db, ALL, actor="cli:test", respond_to="all",
                                            knowledge_sets=["it"], public_only=UNSET, enabled=UNSET)
    assert before.startswith("defaults") and after == "enabled, all, sets it, sources by channel type"
    assert [describe(r) for r in await list_policies(slack_stack.db)] == [after]
    async with slack_stack.db.asession() as session:
        entry = (await session.exec(select(AuditEntry))).one()
    assert entry.actor == "cli:test" and entry.where == f"slack:{ALL}" and entry.after == after

    await slack.event(channel_message("How do I book travel?", channel=ALL))
    placeholder = await slack_api.wait_for("chat.postMessage")
    await slack_api.wait_for("chat.update", ts=placeholder.response["ts"])
    row = await slack_stack.wait_final((await slack_stack.interactions())[0].id)
    assert row.sources == [] or all(s["doc_id"].startswith("it/") for s in row.sources), \
        "only the channel's knowledge sets are cited"
