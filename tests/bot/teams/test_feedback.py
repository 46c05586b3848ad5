"""Feedback from Teams: Action.Execute invokes, the Action.Submit fallback, card-action invokes, reactions."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlmodel import select

from bot.core.settings import Settings
from feedback.models import Feedback, Interaction
from tests.bot.teams.conftest import activity, post, settle, teams_settings
from tests.fakes.botframework import Call, FakeConnector
from tests.stack import Stack, running_stack

QUESTION = "How much is the daily meal allowance when I travel?"


async def ask(stack: Stack, connector: FakeConnector, fixture: str = "message_personal",
              text: str = QUESTION) -> tuple[Interaction, str, dict[str, Any]]:
    """Ask through the endpoint; returns (answered interaction, answer message id, the question activity)."""
    body = activity(fixture, connector, text=text if fixture == "message_personal" else f"<at>My Combined</at> {text}")
    assert (await post(stack, body)).status_code == 200
    rows = await stack.interactions()
    row = await stack.wait_final(rows[-1].id)
    await connector.wait_for(answer_shown)
    await settle(stack)
    async with stack.db.asession() as session:
        row = await session.get(Interaction, row.id)
    assert row is not None and row.delivery["ok"]
    return row, row.delivery["activity_id"], body


def answer_shown(calls: list[Call]) -> bool:
    """The answer card went out: the placeholder updated, or a personal chat's stream ended with it."""
    return any(c.status < 400 and c.card is not None and c.kind in ("update", "send", "reply") for c in calls)


def execute_invoke(question: dict[str, Any], connector: FakeConnector, message_id: str, data: dict[str, Any]) -> dict:
    """The recorded card-action invoke, adapted to an ``adaptiveCard/action`` (Action.Execute) on our answer."""
    body = activity("invoke_card_action", connector, name="adaptiveCard/action", replyToId=message_id,
                    conversation=question["conversation"], channelData=question["channelData"],
                    value={"action": {"type": "Action.Execute", "verb": f"deskmate.{data['deskmate']}", "data": data},
                           "trigger": "manual"})
    body["from"] = question["from"]
    return body


async def feedback_rows(stack: Stack) -> list[Feedback]:
    async with stack.db.asession() as session:
        return list((await session.exec(select(Feedback))).all())


def card_inputs(card: dict) -> list[str]:
    return [e["id"] for e in card["body"] if e["type"].startswith("Input.")]


class RecordingTracer:
    enabled = True

    def __init__(self) -> None:
        self.scores: list[dict[str, Any]] = []

    def score(self, **kwargs: Any) -> None:
        self.scores.append(kwargs)

    def shutdown(self) -> None:
        pass


async def test_thumbs_down_invoke_records_feedback_and_refreshes_the_card_asking_why(teams_stack: Stack,
                                                                                    connector: FakeConnector) -> None:
    row, message_id, question = await ask(teams_stack, connector)
    async with teams_stack.db.asession() as session:  # as if Langfuse had traced the answer
        stored = await session.get(Interaction, row.id)
        assert stored is not None
        stored.trace_id = "trace-123"
        session.add(stored)
        await session.commit()
    tracer = RecordingTracer()
    teams_stack.web_runtime.tracer = tracer
    vote = execute_invoke(question, connector, message_id, {"deskmate": "vote", "iid": row.id, "label": "down"})
    response = await post(teams_stack, vote)
    assert response.status_code == 200, response.text
    refreshed = response.json()
    assert refreshed["statusCode"] == 200 and refreshed["type"] == "application/vnd.microsoft.card.adaptive"
    assert card_inputs(refreshed["value"]) == ["reason", "comment"], "👎 asks what was wrong"
    [fb] = await feedback_rows(teams_stack)
    assert (fb.interaction_id, fb.label, fb.platform, fb.reason) == (row.id, "down", "teams", None)

    reason = execute_invoke(question, connector, message_id,
                            {"deskmate": "reason", "iid": row.id, "reason": "outdated", "comment": "policy changed in May"})
    response = await post(teams_stack, reason)
    assert response.status_code == 200
    assert card_inputs(response.json()["value"]) == []
    [fb] = await feedback_rows(teams_stack)
    assert (fb.label, fb.reason, fb.comment) == ("down", "outdated", "policy changed in May")
    assert [(s["trace_id"], s["value"], s["comment"]) for s in tracer.scores] == [
        ("trace-123", 0.0, None), ("trace-123", 0.0, "outdated")], "each vote is the trace's user_feedback score"
    assert len({s["score_id"] for s in tracer.scores}) == 1, "one score per feedback row, replaced on change"

    up = execute_invoke(question, connector, message_id, {"deskmate": "vote", "iid": row.id, "label": "up"})
    assert (await post(teams_stack, up)).status_code == 200
    [fb] = await feedback_rows(teams_stack)
    assert fb.label == "up" and fb.reason is None, "a changed vote updates the one row"


async def test_recorded_card_action_invoke_is_accepted_and_deskmate_data_records_a_vote(teams_stack: Stack,
                                                                                       connector: FakeConnector) -> None:
    # verbatim shape (value {"key": "value"}): not ours — acknowledged, nothing recorded
    assert (await post(teams_stack, activity("invoke_card_action", connector))).status_code == 200
    assert await feedback_rows(teams_stack) == []

    row, message_id, question = await ask(teams_stack, connector)
    invoke = activity("invoke_card_action", connector, replyToId=message_id, conversation=question["conversation"],
                      channelData=question["channelData"], value={"deskmate": "vote", "iid": row.id, "label": "up"})
    connector.reset()
    assert (await post(teams_stack, invoke)).status_code == 200
    [fb] = await feedback_rows(teams_stack)
    assert (fb.interaction_id, fb.label) == (row.id, "up")
    [update] = [c for c in connector.calls if c.kind == "update"]
    assert update.activity_id == message_id and update.card is not None


async def test_action_submit_fallback_records_the_vote_and_updates_the_card(teams_stack: Stack,
                                                                           connector: FakeConnector) -> None:
    row, message_id, question = await ask(teams_stack, connector)
    connector.reset()
    submit = activity("message_personal", connector, id="1571691299999", text="", replyToId=message_id,
                      value={"deskmate": "vote", "iid": row.id, "label": "down"})
    assert (await post(teams_stack, submit)).status_code == 200
    [fb] = await feedback_rows(teams_stack)
    assert (fb.interaction_id, fb.label) == (row.id, "down")
    [update] = [c for c in connector.calls if c.kind == "update"]
    assert update.activity_id == message_id and card_inputs(update.card) == ["reason", "comment"]
    assert row.delivery["card"] == "compact", "a personal chat's answer was streamed"
    text = update.body["text"]
    assert text and text in row.answer, "the streamed answer's text stays the message's text"
    assert text[:40] not in json.dumps(update.card, ensure_ascii=False), "…and is not repeated in the card"
    assert len(await teams_stack.interactions()) == 1, "a card submit is not a question"


async def test_reaction_on_an_answer_records_a_vote(teams_stack: Stack, connector: FakeConnector) -> None:
    row, message_id, question = await ask(teams_stack, connector, fixture="message_channel_mention",
                                          text="How do I book travel?")
    channel = question["channelData"]["channel"]["id"]
    reaction = activity("message_reaction_added", connector, replyToId=message_id,
                        conversation={"isGroup": True, "conversationType": "channel", "id": channel},
                        channelData=question["channelData"])
    assert (await post(teams_stack, reaction)).status_code == 200
    [fb] = await feedback_rows(teams_stack)
    assert (fb.interaction_id, fb.label, fb.platform) == (row.id, "up", "teams")

    elsewhere = activity("message_reaction_added", connector)  # verbatim: a like on some other message
    assert (await post(teams_stack, elsewhere)).status_code == 200
    assert len(await feedback_rows(teams_stack)) == 1


async def test_vote_for_an_answer_from_another_conversation_is_refused(teams_stack: Stack,
                                                                      connector: FakeConnector) -> None:
    row, message_id, question = await ask(teams_stack, connector)
    intruder = execute_invoke(question, connector, message_id, {"deskmate": "vote", "iid": row.id, "label": "down"})
    intruder["conversation"] = dict(intruder["conversation"], id="a:some-other-chat")
    response = await post(teams_stack, intruder)
    assert response.status_code == 200
    assert response.json()["type"] == "application/vnd.microsoft.error" and response.json()["statusCode"] == 404
    assert await feedback_rows(teams_stack) == []


async def test_ask_a_human_starts_a_thread_in_the_support_channel(make_settings: Callable[..., Settings],
                                                                 connector: FakeConnector) -> None:
    support = "19:support0123456789@thread.tacv2"
    async with running_stack(teams_settings(make_settings, teams_support_channel=support)) as stack:
        row, message_id, question = await ask(stack, connector)
        escalate = execute_invoke(question, connector, message_id, {"deskmate": "escalate", "iid": row.id})
        response = await post(stack, escalate)
        assert response.status_code == 200
        texts = " ".join(e.get("text", "") for e in response.json()["value"]["body"])
        assert "I've asked the support team" in texts
        [created] = connector.of_kind("create_conversation")
        assert created.body["channelData"]["channel"]["id"] == support
        assert QUESTION in created.body["activity"]["text"]
        [fb] = await feedback_rows(stack)
        assert fb.escalated is True and fb.label == "none"
        await settle(stack)
