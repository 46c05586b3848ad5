"""Answer → Adaptive Card, and reading Teams activities (mentions, ids)."""

from __future__ import annotations

import json

from botbuilder.schema import Activity

from bot.core.types import Answer, Source, Status
from bot.teams.activities import build_question, channel_of, idempotency_key, strip_mentions, thread_of
from bot.teams.cards import MAX_CARD_BYTES, CardState, answer_card, card_bytes
from feedback.votes import DOWN_REASONS
from tests.bot.teams.conftest import card_text, recorded


def sources(n: int) -> list[Source]:
    return [Source(number=i, doc_id=f"doc/{i}", title=f"Policy {i}", heading="Details",
                   location=f"https://handbook.example.com/doc/{i}") for i in range(1, n + 1)]


def texts(card: dict) -> str:
    return card_text(card["body"])


def actions(card: dict) -> list[dict]:
    return [a for e in card["body"] if e["type"] == "ActionSet" for a in e["actions"]]


def test_card_has_answer_numbered_source_links_and_feedback_actions_with_submit_fallback() -> None:
    card = answer_card(Answer(interaction_id=7, text="Meals are covered up to €45 a day [1].", sources=sources(2)))
    assert card["version"] == "1.5" and card["type"] == "AdaptiveCard"
    body = texts(card)
    assert "€45 a day [1]" in body
    assert "1. [Policy 1 › Details](https://handbook.example.com/doc/1)" in body
    assert "2. [Policy 2 › Details](https://handbook.example.com/doc/2)" in body
    acts = actions(card)
    assert [a["title"] for a in acts] == ["👍 Helpful", "👎 Not helpful", "🙋 Ask a human"]
    for action in acts:
        assert action["type"] == "Action.Execute" and action["verb"].startswith("deskmate.")
        assert action["data"]["iid"] == 7
        assert action["fallback"] == {"type": "Action.Submit", "title": action["title"], "data": action["data"]}


def test_fallback_and_not_found_are_labelled() -> None:
    extractive = answer_card(Answer(interaction_id=1, text="> quote [1]", sources=sources(1), fallback=True,
                                    fallback_reason="LLM timed out"))
    assert "not written by the AI model (LLM timed out)" in texts(extractive)
    missing = answer_card(Answer(interaction_id=2, text="I couldn't find this.", status=Status.NOT_FOUND))
    assert "Not found in the handbook" in texts(missing)
    assert actions(missing), "a not-found answer can still be rated or escalated"


def test_maintenance_and_errors_have_no_feedback_buttons() -> None:
    card = answer_card(Answer(interaction_id=3, text="Paused for maintenance.", status=Status.MAINTENANCE))
    assert actions(card) == []


def test_thumbs_down_state_asks_for_a_reason_from_the_shared_list() -> None:
    card = answer_card(Answer(interaction_id=4, text="x"), state=CardState.ASK_REASON)
    [choices] = [e for e in card["body"] if e["type"] == "Input.ChoiceSet"]
    assert [c["value"] for c in choices["choices"]] == list(DOWN_REASONS)
    send = [a for a in actions(card) if a["title"] == "Send"]
    assert send and send[0]["data"] == {"deskmate": "reason", "iid": 4}


def test_huge_answers_are_shortened_to_stay_well_under_the_teams_limit() -> None:
    answer = Answer(interaction_id=5, text="word " * 20_000, sources=sources(30))
    card = answer_card(answer)
    assert card_bytes(card) <= MAX_CARD_BYTES < 28_000
    assert "shortened to fit Teams" in texts(card)
    assert len(json.dumps(card)) < 28_000


def test_strip_mentions_removes_only_the_bot() -> None:
    body, _ = recorded("message_channel_mention")
    body["text"] = "<at>My Combined</at> ask <at>Ana Ruiz</at> about &quot;travel&quot;\n"
    body["entities"].append({"type": "mention", "text": "<at>Ana Ruiz</at>", "mentioned": {"id": "29:ana", "name": "Ana Ruiz"}})
    assert strip_mentions(Activity().deserialize(body)) == 'ask Ana Ruiz about "travel"'


def test_question_ids_threads_and_reference_from_recorded_activities() -> None:
    personal = Activity().deserialize(recorded("message_personal")[0])
    channel = Activity().deserialize(recorded("message_channel_mention")[0])
    assert idempotency_key(personal) == f"teams:{personal.conversation.id}:1571691217375"
    assert channel_of(channel) == "19:097e6717fd7245bdbeba6baa13840db8@thread.skype"
    assert thread_of(channel).endswith(";messageid=1571537152320")
    question = build_question(personal, "file", placeholder_id="p1")
    reference = question.reply_target["reference"]
    assert reference["serviceUrl"] == personal.service_url and reference["conversation"]["id"] == personal.conversation.id
    assert question.reply_target["placeholder_id"] == "p1"
    assert question.channel_type == "personal" and question.user == personal.from_property.aad_object_id
    long = Activity().deserialize(recorded("message_personal")[0] | {"conversation": {"id": "a:" + "x" * 400}})
    assert len(idempotency_key(long)) <= 255
