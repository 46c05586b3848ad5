"""Streamed answers in Slack (issue 14): the real SlackDeliverer and slack_sdk against the fake Web API, which
records ``chat.startStream`` / ``chat.appendStream`` / ``chat.stopStream`` and ``assistant.threads.setStatus``
with Slack's wire format. Most tests drive the stream directly (as the pipeline does); two go end to end through
the web app, the worker and the fake Messages API streaming a cited answer token by token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bot.core.settings import Settings
from bot.core.types import Answer, Platform, Question, Source
from bot.delivery import STREAM_REFS, DeliveryFailed
from bot.slack.delivery import SlackDeliverer
from bot.slack import streaming
from bot.slack.pacing import ChannelPacer
from bot.slack.streaming import STREAM_TEXT_LIMIT, SlackAnswerStream
from bot.status_text import SEARCHING, WRITING
from tests.bot.slack.conftest import DM, HUMAN, PUBLIC, SlackClient, direct_message, mention
from tests.bot.slack.control_sequences import control_sequences, visible_text
from tests.fakes.anthropic_server import Reply
from tests.fakes.slack_api import TEAM_ID, FakeSlack
from tests.stack import running_stack

SOURCES = [Source(number=1, doc_id="travel/per-diem", title="Per diem", location="https://handbook.example/per-diem")]
ANSWER = "The US per diem is **USD 80** a day [1]. Meals <!channel> are included."


@pytest.fixture
def deliverer(slack_settings: Callable[..., Settings]) -> SlackDeliverer:
    unpaced = ChannelPacer(None, interval_s=0.0)  # type: ignore[arg-type]  # no Redis needed without pacing
    return SlackDeliverer(slack_settings(), unpaced, append_pacer=unpaced)


@pytest.fixture
async def closing(deliverer: SlackDeliverer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SlackDeliverer]:
    monkeypatch.setattr(streaming, "APPEND_INTERVAL_S", 0.05)  # appends every 50 ms here (1 s in production)
    yield deliverer
    await deliverer.aclose()


async def placeholder_in(slack_api: FakeSlack, channel: str, thread_ts: str) -> str:
    response = slack_api.seed("chat.postMessage", {"channel": channel, "thread_ts": thread_ts,
                                                                   "text": "Looking through the handbook…"})
    return str(response["ts"])


def question(channel: str = PUBLIC, *, thread_ts: str | None = "1700000000.000001", placeholder: str | None = None,
             channel_type: str = "channel") -> Question:
    target: dict[str, Any] = {"channel": channel, "thread_ts": thread_ts, "user": HUMAN}
    if placeholder:
        target["placeholder_ts"] = placeholder
    return Question(idempotency_key="slack:Ev1", platform=Platform.SLACK, workspace=TEAM_ID, channel=channel,
                    thread=thread_ts or channel, user=HUMAN, text="What is the per diem?", channel_type=channel_type,
                    reply_target=target)


async def stream_words(stream: SlackAnswerStream, text: str, *, pause_s: float = 0.0) -> None:
    for n, word in enumerate(text.split(" ")):
        await stream.append(word if n == 0 else " " + word)
        if pause_s:
            await asyncio.sleep(pause_s)


def answer(text: str = ANSWER, **kwargs: Any) -> Answer:
    return Answer(interaction_id=42, text=text, sources=SOURCES, **kwargs)


async def test_a_channel_answer_streams_in_its_thread_and_ends_with_sources_and_buttons(
        closing: SlackDeliverer, slack_api: FakeSlack) -> None:
    placeholder = await placeholder_in(slack_api, PUBLIC, "1700000000.000001")
    stream = await closing.open_stream(question(placeholder=placeholder))
    assert stream is not None
    await stream.status(SEARCHING.text)
    await stream.status(WRITING.text)
    await stream_words(stream, ANSWER, pause_s=0.01)
    refs = await stream.finish(answer())

    progress = slack_api.calls_to("chat.update", ts=placeholder)
    assert [visible_text(c.args["text"]) for c in progress] == [WRITING.text], "the placeholder shows the progress"
    [start] = slack_api.calls_to("chat.startStream")
    assert start.args["thread_ts"] == "1700000000.000001"
    assert (start.args["recipient_team_id"], start.args["recipient_user_id"]) == (TEAM_ID, HUMAN)
    assert slack_api.calls_to("chat.delete", ts=placeholder), "the streamed answer takes the placeholder's place"
    appends = slack_api.calls_to("chat.appendStream")
    assert len(appends) < len(ANSWER.split(" ")) - 1, "text is coalesced, not sent word by word"
    [stop] = slack_api.calls_to("chat.stopStream")
    assert [b["type"] for b in stop.args["blocks"]] == ["context", "actions"]
    assert "handbook.example/per-diem" in str(stop.args["blocks"][0])
    assert refs["ts"] == start.response["ts"] == stop.args["ts"] and refs["method"] == "chat.stopStream"
    shown = slack_api.message_text(PUBLIC, refs["ts"])
    assert visible_text(shown) == ANSWER, "exactly the answer, streamed as written"
    assert control_sequences(shown) == [], "escaped as it streams: no <!channel> from the model"
    assert slack_api.calls_to("chat.postMessage") == [], "no message besides the stream"


async def test_an_assistant_thread_shows_a_status_and_streams_without_recipients(
        closing: SlackDeliverer, slack_api: FakeSlack) -> None:
    stream = await closing.open_stream(question(DM, channel_type="im"))
    assert stream is not None
    await stream.status(SEARCHING.text)
    await stream.status(WRITING.text)
    await stream_words(stream, ANSWER, pause_s=0.01)
    await stream.finish(answer())

    assert [c.args["status"] for c in slack_api.calls_to("assistant.threads.setStatus")] == [
        SEARCHING.text, WRITING.text]
    [start] = slack_api.calls_to("chat.startStream")
    assert "recipient_team_id" not in start.args and start.args["channel"] == DM


async def test_no_stream_without_a_thread_or_for_a_private_reply(closing: SlackDeliverer) -> None:
    assert await closing.open_stream(question(DM, thread_ts=None, channel_type="im")) is None
    ephemeral = question()
    ephemeral.ephemeral = True
    assert await closing.open_stream(ephemeral) is None


async def test_a_429_on_append_is_waited_out_and_no_text_is_lost(
        closing: SlackDeliverer, slack_api: FakeSlack) -> None:
    slack_api.rate_limit("chat.appendStream", retry_after=0.3)
    stream = await closing.open_stream(question())
    assert stream is not None
    await stream_words(stream, ANSWER, pause_s=0.02)
    refs = await stream.finish(answer())

    limited = [c for c in slack_api.calls_to("chat.appendStream") if c.status == 429]
    after = [c for c in slack_api.calls if c.method.startswith("chat.") and c.at > limited[0].at]
    assert limited and after and after[0].at - limited[0].at >= 0.3, "Retry-After honoured"
    assert visible_text(slack_api.message_text(PUBLIC, refs["ts"])) == ANSWER


async def test_a_stream_failing_midway_gets_the_whole_answer_in_the_same_message(
        closing: SlackDeliverer, slack_api: FakeSlack) -> None:
    placeholder = await placeholder_in(slack_api, PUBLIC, "1700000000.000001")
    q = question(placeholder=placeholder)
    stream = await closing.open_stream(q)
    assert stream is not None
    await stream.append("The US per diem")
    await slack_api.wait_for("chat.startStream")
    slack_api.fail("chat.appendStream", "channel_not_found", times=5)
    with pytest.raises(DeliveryFailed):
        for _ in range(200):  # the background sender fails; a later call says so
            await stream.append(" is USD 80")
            await asyncio.sleep(0.02)

    # the pipeline then delivers the answer the ordinary way, over what was streamed
    q.reply_target[STREAM_REFS] = stream.refs
    refs = await closing.deliver(q, answer())
    ts = stream.refs["ts"]
    assert refs["ts"] == ts and refs["replaced_stream"]
    assert [c.args["ts"] for c in slack_api.calls_to("chat.stopStream")] == [ts]
    assert "USD 80" in slack_api.message_text(PUBLIC, ts) and "Meals" in slack_api.message_text(PUBLIC, ts)
    assert (PUBLIC, placeholder) not in slack_api.messages
    assert slack_api.calls_to("chat.postMessage") == [], "never a second answer"


async def test_a_retried_delivery_replaces_a_stream_left_open_by_a_crashed_worker(
        closing: SlackDeliverer, slack_api: FakeSlack) -> None:
    started = slack_api.seed("chat.startStream", {
        "channel": PUBLIC, "thread_ts": "1700000000.000001", "markdown_text": "The US per di",
        "recipient_team_id": TEAM_ID, "recipient_user_id": HUMAN})
    q = question()
    q.reply_target[STREAM_REFS] = {"channel": PUBLIC, "ts": started["ts"]}
    await closing.deliver(q, answer())
    await closing.deliver(q, answer())  # and once more: idempotent

    text = slack_api.message_text(PUBLIC, started["ts"])
    assert "USD 80" in text and "streamed_text" not in slack_api.messages[(PUBLIC, started["ts"])]
    assert slack_api.calls_to("chat.postMessage") == []


async def test_an_answer_other_than_the_streamed_text_replaces_it(
        closing: SlackDeliverer, slack_api: FakeSlack) -> None:
    stream = await closing.open_stream(question())
    assert stream is not None
    await stream_words(stream, "The US per diem is", pause_s=0.01)
    fallback = answer("> Per diem: USD 80 a day. [1]", fallback=True, fallback_reason="the AI model is unavailable")
    refs = await stream.finish(fallback)

    text = slack_api.message_text(PUBLIC, refs["ts"])
    assert "Automatic excerpt" in str(slack_api.messages[(PUBLIC, refs["ts"])]["blocks"])
    assert "The US per diem is" not in text and "USD 80 a day" in text, "no half answer left"


async def test_a_very_long_answer_is_split_over_messages_and_never_cut(
        closing: SlackDeliverer, slack_api: FakeSlack) -> None:
    paragraphs = [f"Paragraph {n}: " + "the travel policy says many things. " * 60 for n in range(16)]
    text = "\n\n".join(paragraphs)  # about 35,000 characters
    stream = await closing.open_stream(question())
    assert stream is not None
    for paragraph in paragraphs:
        await stream.append(paragraph + "\n\n")
        await asyncio.sleep(0.01)
    refs = await stream.finish(answer(text.strip()))

    assert all(len(c.args.get("markdown_text") or "") <= 12_000 for c in slack_api.calls
               if c.method.endswith("Stream")), "within Slack's markdown_text limit"
    assert len(slack_api.message_text(PUBLIC, refs["ts"])) < STREAM_TEXT_LIMIT
    parts = [refs["ts"]] + [c.response["ts"] for c in slack_api.calls_to("chat.postMessage")]
    shown = [visible_text(slack_api.message_text(PUBLIC, ts)) for ts in parts]
    assert len(shown) >= 3 and all(len(s) <= 12_000 for s in shown)
    everything = "\n".join(shown)
    assert all(f"Paragraph {n}:" in everything for n in range(16)), "nothing lost"
    assert "continued below" in shown[0] and "(continued)" in shown[-1]
    assert [c.args.get("thread_ts") for c in slack_api.calls_to("chat.postMessage")] == \
        ["1700000000.000001"] * (len(shown) - 1)
    assert all(c.status == 200 and c.response.get("ok") for c in slack_api.calls if c.method != "chat.delete")


async def test_a_long_answer_without_streaming_replaces_the_placeholder_and_continues(
        closing: SlackDeliverer, slack_api: FakeSlack) -> None:
    placeholder = await placeholder_in(slack_api, PUBLIC, "1700000000.000001")
    text = "\n\n".join(f"Section {n}. " + "Receipts are needed for every expense. " * 50 for n in range(12))
    refs = await closing.deliver(question(placeholder=placeholder), answer(text))

    assert refs["ts"] == placeholder
    assert [c.response.get("error") for c in slack_api.calls if c.response.get("ok") is False] == []
    posted = slack_api.calls_to("chat.postMessage")
    assert posted and "actions" in str(posted[-1].args["blocks"]), "buttons on the last part"
    everything = slack_api.message_text(PUBLIC, placeholder) + "".join(c.text_of_blocks for c in posted)
    assert [n for n in range(12) if f"Section {n}." not in everything] == []


# --- end to end: the web app, the worker, the Messages API streaming token by token ------------------------------
async def test_a_cited_model_answer_streams_into_the_thread_end_to_end(
        slack_settings: Callable[..., Settings], slack_api: FakeSlack, fake_anthropic: Any) -> None:
    fake_anthropic.script(Reply.answer(cite=[0], tokens_per_s=60, first_token_s=0.2))
    settings = slack_settings(anthropic_api_key="test-key", anthropic_base_url=fake_anthropic.url)
    async with running_stack(settings) as stack:
        await SlackClient(stack.client).event(mention("What is the per diem in the US?"))
        stop = await slack_api.wait_for("chat.stopStream")
        row = await stack.wait_final((await stack.interactions())[0].id)

    assert fake_anthropic.requests[-1].stream, "the model's answer was read as a stream"
    methods = [c.method for c in slack_api.calls if c.method.startswith(("chat.", "assistant."))]
    assert methods[0] == "chat.postMessage" and methods[-1] == "chat.stopStream"
    assert methods.index("chat.startStream") < methods.index("chat.stopStream")
    [start] = slack_api.calls_to("chat.startStream")
    assert start.args["markdown_text"].startswith("Here"), "the first words are shown as soon as they come"
    assert stop.args["ts"] == start.response["ts"] == row.delivery["ts"] and row.delivery["streamed"]
    shown = visible_text(slack_api.message_text(PUBLIC, start.response["ts"]))
    assert shown == row.answer and shown.endswith("[1]")
    assert row.status == "answered" and row.delivery_state == "delivered"


async def test_a_model_failing_midway_leaves_the_extractive_answer_not_half_a_stream(
        slack_settings: Callable[..., Settings], slack_api: FakeSlack, fake_anthropic: Any) -> None:
    fake_anthropic.script(*[Reply.answer(cite=[0], tokens_per_s=20, fail_after_tokens=5)] * 3)
    settings = slack_settings(anthropic_api_key="test-key", anthropic_base_url=fake_anthropic.url,
                              llm_max_retries=0)
    async with running_stack(settings) as stack:
        await SlackClient(stack.client).event(direct_message("What is the per diem in the US?"))
        await stack.settle()
        row = await stack.wait_final((await stack.interactions())[0].id)

    assert row.fallback and row.delivery_state == "delivered"
    [start] = slack_api.calls_to("chat.startStream")
    assert row.delivery["ts"] == start.response["ts"], "the streamed message became the answer"
    text = slack_api.message_text(DM, start.response["ts"])
    assert "Here is what" not in text, "the model's half answer is gone"
    assert "Automatic excerpt" in str(slack_api.messages[(DM, start.response["ts"])]["blocks"])
    assert len([c for c in slack_api.calls_to("chat.postMessage") if c.args.get("channel") == DM]) <= 1


async def test_with_streaming_off_a_channel_answer_replaces_the_placeholder_end_to_end(
        slack_settings: Callable[..., Settings], slack_api: FakeSlack, fake_anthropic: Any) -> None:
    fake_anthropic.script(Reply.answer(cite=[0], tokens_per_s=60, first_token_s=0.2))
    settings = slack_settings(anthropic_api_key="test-key", anthropic_base_url=fake_anthropic.url, streaming="off")
    async with running_stack(settings) as stack:
        await SlackClient(stack.client).event(mention("What is the per diem in the US?"))
        await slack_api.wait_for("chat.update", lambda c: "actions" in str(c.args.get("blocks")))
        await stack.settle()
        row = await stack.wait_final((await stack.interactions())[0].id)

    assert not [c for c in slack_api.calls if c.method.endswith("Stream")], "no chat.startStream, nothing streamed"
    [placeholder] = slack_api.calls_to("chat.postMessage")
    assert row.delivery["method"] == "chat.update" and row.delivery["ts"] == placeholder.response["ts"]
    shown = visible_text(slack_api.message_text(PUBLIC, row.delivery["ts"]))
    assert row.answer.split("**")[-1] in shown and "Sources" in shown, "the whole answer with its sources"
    assert row.status == "answered" and row.delivery_state == "delivered"
