"""Questions from Teams through the real web app, queue and worker, against a fake Bot Framework connector."""

from __future__ import annotations

from typing import Any

import pytest

from tests.bot.teams.conftest import activity, card_text, post, recorded, settle
from tests.fakes.botframework import FakeConnector
from tests.stack import Stack

from bot.teams.cards import PLACEHOLDER_TEXT

QUESTION = "How much is the daily meal allowance when I travel?"


def executes(card: dict) -> list[dict]:
    found: list[dict] = []
    for element in card["body"]:
        if element.get("type") == "ActionSet":
            found += [a for a in element["actions"] if a["type"] == "Action.Execute"]
    return found


async def test_personal_message_where_streaming_is_refused_gets_placeholder_then_answer_card_in_place(
        teams_stack: Stack, connector: FakeConnector) -> None:
    connector.streaming_allowed = False  # Teams answers 403 ContentStreamNotAllowed to the stream's start
    body = activity("message_personal", connector, text=QUESTION)
    response = await post(teams_stack, body)
    assert response.status_code == 200, response.text

    [refused] = connector.stream_calls()
    assert refused.status == 403 and refused.stream_info["streamType"] == "informative"
    # the turn itself: typing, then the placeholder, both replies to the user's message
    turn = [c for c in connector.calls if c.kind == "reply" and c.status < 400]
    assert [c.activity_type for c in turn] == ["typing", "message"]
    assert turn[1].body["text"] == PLACEHOLDER_TEXT
    assert all(c.activity_id == body["id"] for c in turn)
    assert all(c.conversation_id == body["conversation"]["id"] for c in turn)
    placeholder_id = turn[1].response["id"]

    update = await connector.wait_for(lambda calls: [c for c in calls if c.kind == "update"])
    update = update[0]
    assert update.activity_id == placeholder_id, "the placeholder is replaced in place, not a new message"
    card = update.card
    assert card is not None and card["version"] == "1.5"
    texts = card_text(card["body"])  # the fallback's quotes are in shaded containers
    assert "not written by the AI model" in texts  # no API key: the labelled extractive fallback
    assert "1. " in texts and "[1]" in texts
    actions = executes(card)
    assert {a["data"].get("label") for a in actions if a["data"]["deskmate"] == "vote"} == {"up", "down"}
    assert all(a["fallback"]["type"] == "Action.Submit" and a["fallback"]["data"] == a["data"] for a in actions)
    assert any(a["data"]["deskmate"] == "escalate" for a in actions)

    await settle(teams_stack)
    [row] = await teams_stack.interactions()
    assert row.platform == "teams" and row.status == "answered" and row.question == QUESTION
    assert row.question_payload["channel_type"] == "personal"
    assert row.delivery["ok"] is True and row.delivery["updated"] is True
    assert row.delivery["activity_id"] == placeholder_id
    assert not [c for c in connector.calls if c.kind == "send"], "nothing else was posted"


async def test_channel_mention_is_stripped_and_the_answer_goes_to_the_reply_chain(teams_stack: Stack,
                                                                                 connector: FakeConnector) -> None:
    body = activity("message_channel_mention", connector)  # recorded text: "<at>My Combined</at>1\n"
    assert (await post(teams_stack, body)).status_code == 200
    [row] = await teams_stack.interactions()
    assert row.question == "1", "the bot's @mention text is removed, the rest kept"
    payload = row.question_payload
    assert payload["channel_type"] == "channel"
    assert payload["channel"] == "19:097e6717fd7245bdbeba6baa13840db8@thread.skype"
    assert payload["thread"] == body["conversation"]["id"] and ";messageid=" in payload["thread"]
    assert payload["user"] == body["from"]["aadObjectId"]
    assert payload["workspace"] == body["conversation"]["tenantId"]

    await teams_stack.wait_final(row.id)
    update = await connector.wait_for(lambda calls: [c for c in calls if c.kind == "update"])
    assert update[0].conversation_id == body["conversation"]["id"], "answered in the post's reply chain"
    assert connector.stream_calls() == [], "Teams streams only in personal chats: a channel gets the placeholder"
    [placeholder] = [c for c in connector.messages() if c.kind == "reply"]
    assert update[0].activity_id == placeholder.response["id"] and update[0].card is not None


async def test_redelivered_activity_gets_one_answer(teams_stack: Stack, connector: FakeConnector) -> None:
    connector.streaming_allowed = False  # placeholder-then-update (streamed: tests/bot/teams/test_streaming.py)
    body = activity("message_personal", connector, text=QUESTION)
    first, again = await post(teams_stack, body), await post(teams_stack, body)
    assert first.status_code == again.status_code == 200
    [row] = await teams_stack.interactions()
    await teams_stack.wait_final(row.id)
    await connector.wait_for(lambda calls: [c for c in calls if c.kind == "update"])
    assert (await post(teams_stack, body)).status_code == 200  # a third time, after the answer went out
    await settle(teams_stack)
    assert len(await teams_stack.interactions()) == 1
    placeholders = [c for c in connector.messages() if c.kind == "reply"]
    assert len(placeholders) == 1, "one placeholder"
    assert len([c for c in connector.calls if c.kind == "update"]) == 1, "one answer"


async def test_same_activity_id_in_another_conversation_is_a_new_question(teams_stack: Stack,
                                                                          connector: FakeConnector) -> None:
    body = activity("message_personal", connector, text=QUESTION)
    other = activity("message_personal", connector, text=QUESTION)
    other["conversation"] = dict(other["conversation"], id="a:another-personal-chat")
    await post(teams_stack, body)
    await post(teams_stack, other)
    assert len(await teams_stack.interactions()) == 2


async def test_group_chat_question_is_answered_with_group_chat_type(teams_stack: Stack,
                                                                    connector: FakeConnector) -> None:
    group, _ = recorded("conversation_update_group_chat")
    body = activity("message_personal", connector, text="<at>Deskmate</at> vpn not working", conversation=group["conversation"],
                    entities=[{"type": "mention", "text": "<at>Deskmate</at>",
                               "mentioned": {"id": "28:cd59cf47-aca1-41e0-8441-387faee8331e", "name": "Deskmate"}}])
    assert (await post(teams_stack, body)).status_code == 200
    [row] = await teams_stack.interactions()
    assert row.question == "vpn not working"
    assert row.question_payload["channel_type"] == "groupChat"
    assert row.channel == group["conversation"]["id"]
    assert (await teams_stack.wait_final(row.id)).status in ("answered", "not_found")


async def test_mention_without_a_question_gets_a_hint_and_nothing_is_queued(teams_stack: Stack,
                                                                           connector: FakeConnector) -> None:
    body = activity("message_channel_mention", connector, text="<at>My Combined</at>\n")
    assert (await post(teams_stack, body)).status_code == 200
    assert await teams_stack.interactions() == []
    [reply] = connector.messages()
    assert "Ask me a question" in reply.body["text"]


async def test_install_greets_once_and_other_conversation_updates_are_ignored(teams_stack: Stack,
                                                                             connector: FakeConnector) -> None:
    for name in ("conversation_update_team_member_added", "conversation_update_group_chat",
                 "conversation_update_channel_created"):
        assert (await post(teams_stack, activity(name, connector))).status_code == 200
    assert connector.calls == [], "someone else joining, or a new channel, is not the bot's business"

    install = activity("conversation_update_team_member_added", connector)
    install["membersAdded"] = [install["recipient"]]  # the bot itself was added: Deskmate installed in a team
    assert (await post(teams_stack, install)).status_code == 200
    assert (await post(teams_stack, install)).status_code == 200  # redelivered
    [greeting] = connector.messages()
    assert "@mention me" in greeting.body["text"]
    assert greeting.conversation_id == install["conversation"]["id"]
    assert await teams_stack.interactions() == []


async def test_unrelated_invokes_and_bad_requests_do_not_fail_the_endpoint(teams_stack: Stack,
                                                                          connector: FakeConnector) -> None:
    assert (await post(teams_stack, activity("invoke_task_fetch", connector))).status_code == 501
    assert (await teams_stack.client.post("/api/messages", content=b"{oops",
                                          headers={"Content-Type": "application/json"})).status_code == 400
    assert (await teams_stack.client.post("/api/messages", json={"text": "no type"})).status_code == 400
    assert (await teams_stack.client.post("/api/messages", content=b"x",
                                          headers={"Content-Type": "text/plain"})).status_code == 415
    assert await teams_stack.interactions() == []


async def test_question_that_cannot_be_recorded_turns_the_placeholder_into_an_apology(
        teams_stack: Stack, connector: FakeConnector, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import OperationalError

    from bot import intake
    from feedback.interactions import InteractionStore

    async def locked(*_args: Any, **_kwargs: Any) -> Any:
        raise OperationalError("INSERT …", {}, Exception("database is locked"))

    monkeypatch.setattr(InteractionStore, "record_pending", locked)
    monkeypatch.setattr(intake, "RECORD_BACKOFF_S", (0.01,))
    connector.streaming_allowed = False
    body = activity("message_personal", connector, text=QUESTION)
    assert (await post(teams_stack, body)).status_code == 200
    [placeholder] = [c for c in connector.calls if c.kind == "reply" and c.activity_type == "message"]
    [apology] = connector.of_kind("update")
    assert apology.activity_id == placeholder.response["id"] and apology.body["text"] == intake.RECORD_FAILED_REPLY
    assert await teams_stack.interactions() == []


async def test_without_redis_claims_the_database_still_catches_a_redelivery(
        teams_stack: Stack, connector: FakeConnector, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.intake import Intake

    async def unavailable(self: Intake, key: str) -> None:
        return None

    monkeypatch.setattr(Intake, "_claim", unavailable)
    connector.streaming_allowed = False
    body = activity("message_personal", connector, text=QUESTION)
    assert (await post(teams_stack, body)).status_code == 200
    assert (await post(teams_stack, body)).status_code == 200
    placeholders = [c for c in connector.calls if c.kind == "reply" and c.activity_type == "message"]
    assert len(placeholders) == 2
    [deleted] = connector.of_kind("delete")
    assert deleted.activity_id == placeholders[1].response["id"], "the redelivery's placeholder is taken back"
    assert len(await teams_stack.interactions()) == 1


async def test_a_german_question_gets_its_placeholder_in_german(teams_stack: Stack, connector: FakeConnector) -> None:
    body = activity("message_channel_mention", connector,
                    text="<at>My Combined</at> Wie hoch ist die Verpflegungspauschale bei einer Dienstreise?")
    assert (await post(teams_stack, body)).status_code == 200
    [placeholder] = [c for c in connector.messages() if c.kind == "reply"]
    assert placeholder.body["text"] == "⏳ Ich sehe im Handbuch nach…"
    [row] = await teams_stack.interactions()
    assert row.question_payload["reply_target"]["language"] == "de"


async def test_a_redelivery_caught_by_the_database_takes_its_stream_back(
        teams_stack: Stack, connector: FakeConnector, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same in a personal chat, where the web turn started a stream instead of posting a placeholder."""
    from bot.intake import Intake

    async def unavailable(self: Intake, key: str) -> None:
        return None

    monkeypatch.setattr(Intake, "_claim", unavailable)
    body = activity("message_personal", connector, text=QUESTION)
    assert (await post(teams_stack, body)).status_code == 200
    assert (await post(teams_stack, body)).status_code == 200
    starts = [c for c in connector.stream_calls() if c.kind == "reply"]
    assert len(starts) == 2
    [deleted] = connector.of_kind("delete")
    assert deleted.activity_id == starts[1].response["id"], "the redelivery's stream is taken back"
    assert len(await teams_stack.interactions()) == 1
