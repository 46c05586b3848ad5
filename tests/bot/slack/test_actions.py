"""Clicks and the 👎 modal, form-encoded (``payload=…``) and signed as Slack sends them → feedback rows."""

from __future__ import annotations

import copy
import json

from sqlmodel import select

from feedback.models import Feedback, Interaction
from tests.bot.slack.conftest import HUMAN, PUBLIC, SUPPORT, SlackClient, block_action, fixture, mention
from tests.fakes.slack_api import Call, FakeSlack
from tests.stack import Stack


async def answered(stack: Stack, slack: SlackClient, slack_api: FakeSlack) -> tuple[Interaction, Call]:
    await slack.event(mention("How do I book travel?"))
    placeholder = await slack_api.wait_for("chat.postMessage")
    update = await slack_api.wait_for("chat.update", ts=placeholder.response["ts"])
    row = await stack.wait_final((await stack.interactions())[0].id)
    return row, update


async def feedback_rows(stack: Stack) -> list[Feedback]:
    async with stack.db.asession() as session:
        return list((await session.exec(select(Feedback))).all())


def view_submission(interaction_id: int, reason: str | None, comment: str | None) -> dict:
    body = copy.deepcopy(fixture("view_submission.json"))
    body["user"]["id"] = HUMAN
    view = body["view"]
    view["callback_id"] = "deskmate_feedback"
    view["private_metadata"] = json.dumps({"interaction_id": interaction_id, "channel": PUBLIC, "message_ts": "1.2"})
    values: dict = {}
    if reason:
        values["reason"] = {"reason": {"type": "radio_buttons", "selected_option": {
            "text": {"type": "plain_text", "text": "The information is outdated", "emoji": True}, "value": reason}}}
    values["comment"] = {"comment": {"type": "plain_text_input", "value": comment}}
    view["state"] = {"values": values}
    return body


async def test_thumbs_up_then_down_with_modal_reason_keeps_one_label(
        slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack) -> None:
    row, update = await answered(slack_stack, slack, slack_api)
    value = str(row.id)
    up = block_action("deskmate_vote_up", value, channel=PUBLIC, message_ts=update.args["ts"],
                      response_url=slack_api.response_url("up"))
    response = await slack.interactive(up)
    assert response.status_code == 200
    thanks = await slack_api.wait_for("response_url")
    assert thanks.path.endswith("/up") and thanks.args["response_type"] == "ephemeral"
    assert thanks.args["replace_original"] is False, "the shared answer stays as it is"
    assert [(f.label, f.platform) for f in await feedback_rows(slack_stack)] == [("up", "slack")]

    down = block_action("deskmate_vote_down", value, channel=PUBLIC, message_ts=update.args["ts"],
                        response_url=slack_api.response_url("down"))
    assert (await slack.interactive(down)).status_code == 200
    opened = await slack_api.wait_for("views.open")
    assert opened.args["trigger_id"] == down["trigger_id"]
    modal = opened.args["view"]
    assert modal["callback_id"] == "deskmate_feedback"
    assert json.loads(modal["private_metadata"])["interaction_id"] == row.id
    reasons = next(b for b in modal["blocks"] if b.get("block_id") == "reason")["element"]["options"]
    assert {o["value"] for o in reasons} >= {"wrong", "outdated", "incomplete"}
    for _ in range(50):
        rows = await feedback_rows(slack_stack)
        if rows[0].label == "down":
            break
        await __import__("asyncio").sleep(0.05)
    assert [(f.label, f.reason) for f in rows] == [("down", None)], "👎 counts even if the modal is closed"

    submitted = await slack.interactive(view_submission(row.id, "outdated", "The allowance changed in 2024"))
    assert submitted.status_code == 200
    assert submitted.text in ("", "{}") or "response_action" not in submitted.text, "the modal just closes"
    for _ in range(50):
        rows = await feedback_rows(slack_stack)
        if rows[0].reason:
            break
        await __import__("asyncio").sleep(0.05)
    assert [(f.label, f.reason, f.comment) for f in rows] == [("down", "outdated", "The allowance changed in 2024")]
    assert rows[0].interaction_id == row.id


async def test_ask_a_human_posts_to_the_support_channel(slack_stack: Stack, slack: SlackClient,
                                                        slack_api: FakeSlack) -> None:
    row, update = await answered(slack_stack, slack, slack_api)
    click = block_action("deskmate_escalate", str(row.id), channel=PUBLIC, message_ts=update.args["ts"],
                         response_url=slack_api.response_url("human"))
    assert (await slack.interactive(click)).status_code == 200
    posted = await slack_api.wait_for("chat.postMessage", channel=SUPPORT)
    assert f"<@{HUMAN}>" in posted.args["text"] and "How do I book travel?" in posted.args["text"]
    assert f"<#{PUBLIC}>" in posted.args["text"]
    assert "northwind.slack.com/archives/" in posted.args["text"], "links to the conversation"
    confirmation = await slack_api.wait_for("response_url")
    assert SUPPORT in confirmation.args["text"]
    rows = await feedback_rows(slack_stack)
    assert [(f.label, f.escalated) for f in rows] == [("none", True)]


async def test_click_on_an_unknown_answer_changes_nothing(slack_stack: Stack, slack: SlackClient,
                                                          slack_api: FakeSlack) -> None:
    click = block_action("deskmate_vote_up", "999", channel=PUBLIC, message_ts="1.1",
                         response_url=slack_api.response_url("x"))
    assert (await slack.interactive(click)).status_code == 200
    forged = await slack.post_raw("payload=%7B%7D", "application/x-www-form-urlencoded",
                                  {"X-Slack-Signature": "v0=00", "X-Slack-Request-Timestamp": "1"})
    assert forged.status_code == 401
    await slack_stack.settle()  # the click's listener has run to its end
    assert await feedback_rows(slack_stack) == []
