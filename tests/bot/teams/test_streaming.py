"""Streamed answers in Teams personal chats, against the fake Bot Framework connector playing Teams' streaming
protocol (informative start → paced, cumulative ``streaming`` updates → a ``final`` message with the card).

What a user sees: "Looking through the handbook…" at once, the answer growing about once a second, then the
answer with its numbered sources and 👍/👎/"Ask a human" in the same message — or, when the stream fails midway,
the complete answer card in place of the half-streamed message: never a half answer, never two answers. Channels
and group chats keep the placeholder that is updated (tests/bot/teams/test_messages.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botbuilder.schema import Activity, ConversationReference

from bot.core.settings import Settings
from bot.core.types import Answer, Question, Source, Status
from bot.delivery import STREAM_REFS, DeliveryFailed
from bot.status_text import FAILURE_NOTICE, SEARCHING, WRITING, record_failed_reply
from bot.teams.activities import build_question
from bot.teams.cards import PLACEHOLDER_TEXT, SHORTENED
from bot.teams.delivery import TeamsDeliverer
from bot.teams.streaming import STREAM_INTERVAL_S, start_activity
from playbooks.killswitch import GLOBAL_SCOPE, Mode, set_mode
from tests.bot.teams.conftest import activity, card_text, post, settle, teams_settings
from tests.conftest import settings_for
from tests.fakes.anthropic_server import Reply
from tests.fakes.botframework import Call, FakeConnector, Stream
from tests.stack import Stack, running_stack

ANSWER_TEXT = ("You can claim a daily meal allowance while you travel for work [1]. The amount depends on the "
               "destination, and receipts are needed for anything above it [1].")
SOURCES = [Source(number=1, doc_id="travel/per-diem", title="Per diem and meals",
                  location="https://handbook.example.com/travel/per-diem")]


@pytest.fixture
def deliverer(tmp_path: Path) -> TeamsDeliverer:
    return TeamsDeliverer(settings_for(tmp_path, teams_delivery_attempts=3, teams_delivery_backoff_s=0.01))


async def started(deliverer: TeamsDeliverer, connector: FakeConnector, fixture: str = "message_personal") -> Question:
    """A question whose web turn started a stream (as bot/teams/bot.py does), just now."""
    body = activity(fixture, connector)
    question = build_question(Activity().deserialize(body), "How much is the meal allowance?", placeholder_id=None)
    reference = ConversationReference().deserialize(question.reply_target["reference"])
    stream_id = await deliverer.sender.send(reference, start_activity(PLACEHOLDER_TEXT))
    assert stream_id
    question.reply_target.update(stream_id=stream_id, stream_sequence=1, stream_started_at=time.time())
    return question


def only_stream(connector: FakeConnector) -> Stream:
    [stream] = connector.streams.values()
    return stream


def assert_cumulative(updates: list[str]) -> None:
    for before, after in zip(updates, updates[1:], strict=False):
        assert after.startswith(before) and after != before, "each update carries the whole answer so far"


async def write(stream: Any, text: str, *, pace_s: float) -> None:
    for n, word in enumerate(text.split(" ")):
        await stream.append(word if n == 0 else " " + word)
        await asyncio.sleep(pace_s)


async def test_a_streamed_answer_grows_in_paced_cumulative_updates_and_ends_with_the_card(
        deliverer: TeamsDeliverer, connector: FakeConnector) -> None:
    question = await started(deliverer, connector)
    stream = await deliverer.open_stream(question)
    assert stream is not None
    await stream.status(SEARCHING.text)
    await connector.wait_for(lambda _: len(only_stream(connector).informative) == 2)
    await stream.status(WRITING.text)
    began = time.monotonic()
    await write(stream, ANSWER_TEXT, pace_s=0.08)  # ~2 s of text, a word every 80 ms
    refs = await stream.finish(Answer(interaction_id=5, text=ANSWER_TEXT, sources=SOURCES))
    elapsed = time.monotonic() - began

    s = only_stream(connector)
    assert s.informative[:2] == [PLACEHOLDER_TEXT, SEARCHING.with_icon]
    assert 2 <= len(s.updates) <= 1 + elapsed / STREAM_INTERVAL_S, "coalesced: about one update a second"
    assert_cumulative(s.updates)
    assert ANSWER_TEXT.startswith(s.updates[-1])
    assert s.dropped == 0 and not [c for c in connector.calls if c.status >= 400], "nothing throttled or refused"
    sequences = [c.stream_info["streamSequence"] for c in connector.stream_calls()[:-1]]
    assert sequences == list(range(1, len(sequences) + 1))

    final = s.final
    assert final is not None and final.activity_type == "message" and final.kind == "send"
    assert final.stream_info == {"type": "streaminfo", "streamId": s.stream_id, "streamType": "final"}
    assert final.body["text"] == ANSWER_TEXT, "the final message holds the complete answer"
    card_body = card_text(final.card["body"])
    assert "1. [Per diem and meals](https://handbook.example.com/travel/per-diem)" in card_body
    assert "daily meal allowance" not in card_body, "the card holds sources and actions, not the text again"
    assert [a["title"] for e in final.card["body"] if e["type"] == "ActionSet" for a in e["actions"]] == [
        "👍 Helpful", "👎 Not helpful", "🙋 Ask a human"]
    assert refs["stream_id"] == refs["activity_id"] == s.stream_id and refs["card"] == "compact"
    assert not connector.of_kind("update") and len(connector.messages()) == 1, "one message: the streamed one"


async def test_a_stream_failing_midway_is_reported_and_the_answer_replaces_the_streamed_message(
        deliverer: TeamsDeliverer, connector: FakeConnector) -> None:
    question = await started(deliverer, connector)
    stream = await deliverer.open_stream(question)
    assert stream is not None
    await write(stream, ANSWER_TEXT[:60], pace_s=0.02)
    await connector.wait_for(lambda _: only_stream(connector).updates)
    connector.expire_streams()  # Teams ends the stream (403 ContentStreamNotAllowed)
    with pytest.raises(DeliveryFailed) as failed:
        await write(stream, ANSWER_TEXT[60:], pace_s=0.1)
        await stream.finish(Answer(interaction_id=5, text=ANSWER_TEXT, sources=SOURCES))
    assert "403" in failed.value.error

    # what the pipeline does next: the answer delivered over the earlier stream (reply_target["stream"])
    question.reply_target[STREAM_REFS] = stream.refs
    result = await deliverer.deliver(question, Answer(interaction_id=5, text=ANSWER_TEXT, sources=SOURCES))
    [refused_final] = [c for c in connector.stream_calls() if c.stream_info["streamType"] == "final"]
    assert refused_final.status == 403
    [update] = connector.of_kind("update")
    assert update.activity_id == only_stream(connector).stream_id, "the half-streamed message is replaced"
    assert "daily meal allowance" in card_text(update.card["body"]) and not update.body.get("text")
    assert result["ok"] and result["updated"] and "403" in result["stream_error"]
    assert [c.kind for c in connector.messages()] == ["update"], "no second message"


async def test_a_very_long_answer_stops_streaming_at_the_limit_and_ends_shortened_with_a_note(
        deliverer: TeamsDeliverer, connector: FakeConnector) -> None:
    question = await started(deliverer, connector)
    stream = await deliverer.open_stream(question)
    assert stream is not None
    long_text = " ".join(f"word{n}" for n in range(6_000))  # ~50 KB
    for start in range(0, len(long_text), 1_000):  # in 50 pieces over ~2 s
        await stream.append(long_text[start:start + 1_000])
        await asyncio.sleep(0.04)
    await stream.finish(Answer(interaction_id=6, text=long_text, sources=SOURCES))
    s = only_stream(connector)
    assert all(len(u.encode()) <= 16_000 for u in s.updates)
    assert s.final is not None and s.final.body["text"].endswith(f"_({SHORTENED})_")
    assert len(json.dumps(s.final.body, ensure_ascii=False).encode()) < 28_000, "under Teams' message limit"


async def test_abandon_ends_the_stream_with_the_maintenance_reply_and_no_buttons(
        deliverer: TeamsDeliverer, connector: FakeConnector) -> None:
    question = await started(deliverer, connector)
    stream = await deliverer.open_stream(question)
    assert stream is not None
    await write(stream, "The allowance is", pace_s=0.01)
    await stream.abandon("Deskmate is paused for maintenance.")
    final = only_stream(connector).final
    assert final is not None and final.body["text"] == "Deskmate is paused for maintenance."
    assert "Deskmate is paused" in card_text(final.card["body"])  # the label
    assert not [e for e in final.card["body"] if e["type"] == "ActionSet"]


async def test_an_answer_delivered_without_streaming_still_ends_the_web_turns_stream(
        deliverer: TeamsDeliverer, connector: FakeConnector) -> None:
    """A retried job (or any path that did not stream) closes the stream the web turn started: no progress bar
    left behind, no second message."""
    question = await started(deliverer, connector)
    result = await deliverer.deliver(question, Answer(interaction_id=7, text="Not in the handbook.",
                                                      status=Status.NOT_FOUND))
    final = only_stream(connector).final
    assert final is not None and final.body["text"] == "Not in the handbook."
    assert result["card"] == "compact" and result["activity_id"] == only_stream(connector).stream_id
    again = await deliverer.deliver(question, Answer(interaction_id=7, text="Not in the handbook.",
                                                     status=Status.NOT_FOUND))
    assert again["ok"] and [c.activity_id for c in connector.of_kind("update")] == [only_stream(connector).stream_id]
    assert len(connector.messages()) == 2, "the final message, then the same message updated: one answer"


async def test_no_stream_in_channels_or_without_a_started_stream(deliverer: TeamsDeliverer,
                                                                connector: FakeConnector) -> None:
    channel = build_question(Activity().deserialize(activity("message_channel_mention", connector)), "vpn?",
                             placeholder_id="p1")
    assert await deliverer.open_stream(channel) is None
    personal = build_question(Activity().deserialize(activity("message_personal", connector)), "vpn?",
                              placeholder_id="p1")
    assert await deliverer.open_stream(personal) is None, "the web turn's stream was refused: the placeholder"
    old = await started(deliverer, connector)
    old.reply_target["stream_started_at"] = time.time() - 100
    assert await deliverer.open_stream(old) is None, "too close to Teams' two minutes: replaced at the end"


# --- end to end: the web app, the worker, the model streaming at a realistic pace -------------------------
def streamed_settings(make_settings: Callable[..., Settings], fake_anthropic: Any) -> Settings:
    return teams_settings(make_settings, anthropic_api_key="test-key", anthropic_base_url=fake_anthropic.url,
                          llm_max_retries=0)


LONG_CITED = ("The daily meal allowance is the per diem rate for your destination, it covers breakfast, lunch and "
              "dinner, and you claim it with your expense report after the trip, keeping receipts for anything "
              "you spend above the rate. ")


def final_calls(connector: FakeConnector) -> list[Call]:
    return [c for c in connector.stream_calls() if c.stream_info.get("streamType") == "final" and c.status < 400]


async def test_a_personal_chat_sees_the_answer_streamed_and_then_the_card(
        make_settings: Callable[..., Settings], fake_anthropic: Any, connector: FakeConnector) -> None:
    fake_anthropic.always(Reply.answer(first_token_s=1.5, tokens_per_s=15, segments=[(LONG_CITED, 0)]))
    async with running_stack(streamed_settings(make_settings, fake_anthropic)) as stack:
        body = activity("message_personal", connector, text="How much is the daily meal allowance when I travel?")
        assert (await post(stack, body)).status_code == 200
        [start] = connector.stream_calls()
        assert (start.kind, start.activity_type, start.body["text"]) == ("reply", "typing", PLACEHOLDER_TEXT)
        assert start.stream_info == {"type": "streaminfo", "streamType": "informative", "streamSequence": 1}
        [final] = await connector.wait_for(lambda _: final_calls(connector))
        await settle(stack)
        [row] = await stack.interactions()

    s = only_stream(connector)
    assert s.informative[0] == PLACEHOLDER_TEXT
    assert {SEARCHING.with_icon, WRITING.with_icon} & set(s.informative[1:]), "the live status while it works"
    assert len(s.updates) >= 2, "the answer grew in the chat before it was complete"
    assert_cumulative(s.updates)
    assert s.dropped == 0 and not [c for c in connector.calls if c.status >= 400]
    assert final.body["text"] == row.answer and "[1]" in row.answer
    assert "1. " in card_text(final.card["body"])
    assert row.status == "answered" and row.delivery_state == "delivered"
    assert row.delivery["streamed"] is True and row.delivery["stream_id"] == s.stream_id
    assert not connector.of_kind("update"), "no placeholder to update"
    assert [c.activity_type for c in connector.messages()] == ["message"], "one message: the streamed answer"


async def test_a_stream_that_teams_ends_midway_gets_the_whole_answer_in_its_place(
        make_settings: Callable[..., Settings], fake_anthropic: Any, connector: FakeConnector) -> None:
    fake_anthropic.always(Reply.answer(first_token_s=0.2, tokens_per_s=15, segments=[(LONG_CITED, 0)]))
    async with running_stack(streamed_settings(make_settings, fake_anthropic)) as stack:
        body = activity("message_personal", connector, text="How much is the daily meal allowance when I travel?")
        assert (await post(stack, body)).status_code == 200
        await connector.wait_for(lambda _: connector.streams and only_stream(connector).updates)
        connector.expire_streams()  # 403 ContentStreamNotAllowed from now on
        [row] = await stack.interactions()
        row = await stack.wait_final(row.id)
        [update] = await connector.wait_for(lambda calls: [c for c in calls if c.kind == "update" and c.status < 400])
        await settle(stack)
        [row] = await stack.interactions()

    assert update.activity_id == only_stream(connector).stream_id, "the half-streamed message shows the answer"
    assert "per diem" in card_text(update.card["body"]) and "[1]" in card_text(update.card["body"])
    assert row.delivery_state == "delivered" and row.delivery["activity_id"] == update.activity_id
    assert [c.kind for c in connector.messages()] == ["update"], "one answer, and no second message"


async def test_a_question_that_cannot_be_recorded_ends_the_stream_with_the_apology(
        teams_stack: Stack, connector: FakeConnector, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import OperationalError

    from bot import intake
    from feedback.interactions import InteractionStore

    async def locked(*_args: Any, **_kwargs: Any) -> Any:
        raise OperationalError("INSERT …", {}, Exception("database is locked"))

    monkeypatch.setattr(InteractionStore, "record_pending", locked)
    monkeypatch.setattr(intake, "RECORD_BACKOFF_S", (0.01,))
    body = activity("message_personal", connector, text="How much is the meal allowance?")
    assert (await post(teams_stack, body)).status_code == 200
    s = only_stream(connector)
    assert s.final is not None and s.final.body["text"] == intake.RECORD_FAILED_REPLY

    body = activity("message_personal", connector, text="Combien vaut l'indemnité de repas quand je voyage pour le "
                    "travail ?")
    assert (await post(teams_stack, body)).status_code == 200
    [french] = [x for x in connector.streams.values() if x is not s]
    assert french.final is not None and french.final.body["text"] == record_failed_reply("fr")
    assert "pas pu prendre votre question" in french.final.body["text"], "the apology in the asker's language"
    assert [c.activity_type for c in connector.messages()] == ["message"] * 2, "each apology in its stream"
    assert await teams_stack.interactions() == []


async def test_the_live_status_and_the_failure_notice_are_in_the_askers_language(
        deliverer: TeamsDeliverer, connector: FakeConnector) -> None:
    question = await started(deliverer, connector)
    question.reply_target["language"] = "de"  # the web turn detected it from the question
    stream = await deliverer.open_stream(question)
    assert stream is not None
    await stream.status(SEARCHING.text)
    await connector.wait_for(lambda _: len(only_stream(connector).informative) == 2)
    assert only_stream(connector).informative[1] == "🔎 Durchsuche das Handbuch…"
    await deliverer.deliver_failure(question, FAILURE_NOTICE)
    final = only_stream(connector).final
    assert final is not None and final.body["text"].startswith("Entschuldigung – beim Beantworten")


async def test_a_kill_switch_set_while_the_answer_streams_ends_it_with_the_maintenance_reply(
        make_settings: Callable[..., Settings], fake_anthropic: Any, connector: FakeConnector) -> None:
    fake_anthropic.always(Reply.answer(first_token_s=0.2, tokens_per_s=10, segments=[(LONG_CITED * 2, 0)]))
    async with running_stack(streamed_settings(make_settings, fake_anthropic)) as stack:
        body = activity("message_personal", connector, text="How much is the daily meal allowance when I travel?")
        assert (await post(stack, body)).status_code == 200
        await connector.wait_for(lambda _: connector.streams and only_stream(connector).updates)
        async with stack.db.asession() as session:
            await set_mode(session, GLOBAL_SCOPE, Mode.OFF, actor="teams:admin", reason="incident 7")
        [final] = await connector.wait_for(lambda _: final_calls(connector))
        await settle(stack)
        [row] = await stack.interactions()

    assert row.status == "maintenance" and row.fallback_reason == "incident 7"
    assert final.body["text"] == row.answer, "the half-written answer is replaced by the maintenance reply"
    assert "paused" in card_text(final.card["body"]).lower()
    assert not [e for e in final.card["body"] if e["type"] == "ActionSet"], "no buttons on a maintenance reply"
    assert not connector.of_kind("update") and [c.activity_type for c in connector.messages()] == ["message"]


async def test_with_streaming_off_a_personal_chat_gets_the_placeholder_then_the_answer_card(
        make_settings: Callable[..., Settings], fake_anthropic: Any, connector: FakeConnector) -> None:
    fake_anthropic.always(Reply.answer(first_token_s=0.2, tokens_per_s=30, segments=[(LONG_CITED, 0)]))
    settings = teams_settings(make_settings, anthropic_api_key="test-key", anthropic_base_url=fake_anthropic.url,
                              llm_max_retries=0, streaming="off")
    async with running_stack(settings) as stack:
        body = activity("message_personal", connector, text="How much is the daily meal allowance when I travel?")
        assert (await post(stack, body)).status_code == 200
        [row] = await stack.interactions()
        row = await stack.wait_final(row.id)
        [update] = await connector.wait_for(lambda calls: [c for c in calls if c.kind == "update" and c.status < 400])
        await settle(stack)

    assert connector.stream_calls() == [] and not connector.streams, "no streaming activities at all"
    [placeholder] = [c for c in connector.messages() if c.kind == "reply"]
    assert placeholder.body["text"] == PLACEHOLDER_TEXT
    assert update.activity_id == row.delivery["activity_id"], "the placeholder became the answer"
    assert "[1]" in card_text(update.card["body"]) and row.delivery_state == "delivered"
