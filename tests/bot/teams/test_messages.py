"""Questions from Teams through the real web app, queue and worker, against a fake Bot Framework connector."""

from __future__ import annotations

from tests.bot.teams.conftest import activity, post
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


async def test_personal_message_gets_placeholder_then_answer_card_in_place(teams_stack: Stack,
                                                                           connector: FakeConnector) -> None:
    body = activity("message_personal", connector, text=QUESTION)
    response = await post(teams_stack, body)
    assert response.status_code == 200, response.text

    # the turn itself: typing, then the placeholder, both replies to the user's message
    turn = [c for c in connector.calls if c.kind == "reply"]
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
    texts = " ".join(e.get("text", "") for e in card["body"] if e["type"] == "TextBlock")
    assert "not written by the AI model" in texts  # no API key: the labelled extractive fallback
    assert "1. " in texts and "[1]" in texts
    actions = executes(card)
    assert {a["data"].get("label") for a in actions if a["data"]["deskmate"] == "vote"} == {"up", "down"}
    assert all(a["fallback"]["type"] == "Action.Submit" and a["fallback"]["data"] == a["data"] for a in actions)
    assert any(a["data"]["deskmate"] == "escalate" for a in actions)

    [row] = await teams_stack.interactions()
    assert row.platform == "teams" and row.status == "answered" and row.question == QUESTION
    assert row.question_payload["channel_type"] == "personal"
    assert row.delivery["ok"] is True and row.delivery["updated"] is True
    assert row.delivery["activity_id"] == placeholder_id
    assert not [c for c in connector.calls if c.kind == "send"], "nothing else was posted"
