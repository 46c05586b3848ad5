"""``/deskmate``: ask (ephemeral answer through response_url), help, and admin commands via the shared handler."""

from __future__ import annotations

import json

from playbooks.admin import AdminActor
from tests.bot.slack.conftest import DM, HUMAN, PUBLIC, SlackClient, slash_command
from tests.fakes.slack_api import FakeSlack
from tests.stack import Stack


async def test_ask_answers_ephemerally_through_the_response_url(slack_stack: Stack, slack: SlackClient,
                                                                slack_api: FakeSlack) -> None:
    form = slash_command("ask How do I book travel?", response_url=slack_api.response_url("cmd"))
    response = await slack.command(form)
    assert response.status_code == 200
    ack = response.json()
    assert ack["response_type"] == "ephemeral" and "Looking through the handbook" in ack["text"]
    answer = await slack_api.wait_for("response_url")
    assert answer.path.endswith("/cmd")
    assert answer.args["response_type"] == "ephemeral" and "[1]" in json.dumps(answer.args["blocks"])
    assert any(b["type"] == "actions" for b in answer.args["blocks"]), "feedback buttons on ephemeral answers too"
    rows = await slack_stack.interactions()
    assert len(rows) == 1 and rows[0].question == "How do I book travel?"
    assert rows[0].question_payload["ephemeral"] is True
    assert slack_api.calls_to("chat.postMessage") == [], "nothing visible to the channel"


async def test_ask_in_a_public_channel_keeps_the_channels_source_policy(
        slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack) -> None:
    form = slash_command("ask How does the engineering on-call rotation work?",
                         response_url=slack_api.response_url("oncall"))
    assert (await slack.command(form)).status_code == 200
    await slack_api.wait_for("response_url")
    row = await slack_stack.wait_final((await slack_stack.interactions())[0].id)
    assert not any(s["doc_id"].startswith("engineering/") for s in row.sources)


async def test_help_and_empty_ask(slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack) -> None:
    help_response = await slack.command(slash_command("help", response_url=slack_api.response_url()))
    assert help_response.status_code == 200 and "/deskmate ask" in help_response.json()["text"]
    bare = await slack.command(slash_command("", response_url=slack_api.response_url()))
    assert "/deskmate ask" in bare.json()["text"]
    empty = await slack.command(slash_command("ask   ", response_url=slack_api.response_url()))
    assert "Ask me a question" in empty.json()["text"]
    assert await slack_stack.interactions() == []


async def test_admin_commands_go_to_the_shared_handler(slack_settings, slack_api: FakeSlack) -> None:
    from tests.stack import running_stack

    settings = slack_settings(admin_user_ids=[f"slack:{HUMAN}"])
    async with running_stack(settings) as stack:
        slack = SlackClient(stack.client)
        response = await slack.command(slash_command("kill off here maintenance window",
                                                     response_url=slack_api.response_url("kill")))
        assert response.status_code == 200
        reply = await slack_api.wait_for("response_url")
        assert reply.args["response_type"] == "ephemeral"
        status = await slack.command(slash_command("status", response_url=slack_api.response_url("status")))
        assert status.status_code == 200
        status_reply = await slack_api.wait_for("response_url", count=2)
        assert "**" not in status_reply.args["text"], "Markdown was converted to mrkdwn"

        from playbooks.killswitch import Mode, effective_mode

        async with stack.db.asession() as session:
            mode, _switch = await effective_mode(session, "slack", PUBLIC)
        assert mode == Mode.OFF, reply.args["text"]

        outsider = await slack.command(slash_command("kill off", user="W999",
                                                     response_url=slack_api.response_url("no")))
        assert outsider.status_code == 200
        refused = await slack_api.wait_for("response_url", count=3)
        assert "only Deskmate admins" in refused.args["text"]
    assert AdminActor  # the API this adapter calls


async def test_ask_in_a_dm_uses_the_dm_policy(slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack) -> None:
    form = slash_command("ask How does the engineering on-call rotation work?", channel=DM,
                         channel_name="directmessage", response_url=slack_api.response_url("dm"))
    assert (await slack.command(form)).status_code == 200
    await slack_api.wait_for("response_url")
    row = await slack_stack.wait_final((await slack_stack.interactions())[0].id)
    assert row.question_payload["channel_type"] == "im"
    assert any(s["doc_id"].startswith("engineering/") for s in row.sources)
