"""Events over HTTP: mention → placeholder → answer; DM; thread follow-ups with context; what is ignored;
retried deliveries; source visibility per channel; failures the user can see."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from playbooks.channel_policy import set_policy
from bot.core.settings import Settings
from bot.core.types import FINAL_STATUSES
from feedback.models import Interaction
from bot.status_text import record_failed_reply
from tests.bot.slack.conftest import (
    ALL,
    DM,
    HUMAN,
    PRIVATE,
    PUBLIC,
    SlackClient,
    channel_message,
    direct_message,
    fixture,
    mention,
)
from tests.fakes.slack_api import Call, FakeSlack
from tests.stack import Stack, running_stack


async def only_interaction(stack: Stack, timeout_s: float = 10.0) -> Interaction:
    """The one recorded question, once answered (listeners record it just after the ack)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not (rows := await stack.interactions()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert len(rows) == 1, [r.question for r in rows]
    return await stack.wait_final(rows[0].id)


async def delivered(stack: Stack, interaction_id: int, timeout_s: float = 10.0) -> dict[str, Any]:
    """The interaction's delivery record (written just after the answer is posted)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        async with stack.db.asession() as session:
            row = await session.get(Interaction, interaction_id)
        if row is not None and row.delivery or asyncio.get_running_loop().time() > deadline:
            return row.delivery if row is not None else {}
        await asyncio.sleep(0.05)


def answer_update(slack_api: FakeSlack, placeholder: Call) -> Callable[[Call], bool]:
    def is_answer(call: Call) -> bool:
        return call.args.get("ts") == placeholder.response["ts"] and call.response.get("ok") is True

    return is_answer


def buttons(call: Call) -> dict[str, str]:
    actions = [b for b in call.args["blocks"] if b["type"] == "actions"]
    assert actions, "the answer has feedback buttons"
    return {e["action_id"]: e["value"] for e in actions[0]["elements"]}


def doc_ids(row: Interaction) -> set[str]:
    return {s["doc_id"] for s in row.sources} | {p["doc_id"] for p in row.passages}


async def test_mention_gets_placeholder_then_answer_with_sources_and_buttons(
        slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack) -> None:
    event = mention("How much is the daily meal allowance when I travel?")
    response = await slack.event(event)
    assert response.status_code == 200

    placeholder = await slack_api.wait_for("chat.postMessage")
    assert placeholder.args["channel"] == PUBLIC
    assert placeholder.args["thread_ts"] == event["event"]["ts"], "answered in a thread on the question"
    assert "Looking through the handbook" in placeholder.args["text"]

    row = await only_interaction(slack_stack)
    assert row.idempotency_key == f"slack:{event['event_id']}"
    assert row.question == "How much is the daily meal allowance when I travel?", "the <@BOT> mention is stripped"
    assert row.thread == event["event"]["ts"] and row.status == "answered"

    update = await slack_api.wait_for("chat.update", answer_update(slack_api, placeholder))
    assert update.args["channel"] == PUBLIC
    blocks = update.args["blocks"]
    assert len(blocks) <= 50
    assert any(b["type"] == "markdown" and "[1]" in b["text"] for b in blocks), "the answer in a markdown block"
    sources = next(b for b in blocks if b["type"] == "context" and "*Sources*" in b["elements"][0]["text"])
    assert "<https://handbook.northwind.example/travel/per-diem|[1] " in sources["elements"][0]["text"]
    assert buttons(update) == {"deskmate_vote_up": str(row.id), "deskmate_vote_down": str(row.id),
                               "deskmate_escalate": str(row.id)}
    labels = [b for b in blocks if b["type"] == "context" and "Automatic excerpt" in b["elements"][0]["text"]]
    assert labels, "no API key: the extractive fallback is labelled as such"
    assert (await delivered(slack_stack, row.id))["method"] == "chat.update"
    assert len(slack_api.calls_to("chat.postMessage")) == 1, "the answer replaced the placeholder"


async def test_direct_message_in_assistant_thread_is_answered_in_that_thread(
        slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack) -> None:
    started = fixture("assistant_thread_started.json")
    assert (await slack.event(started)).status_code == 200
    greeting = await slack_api.wait_for("chat.postMessage")
    assert greeting.args["thread_ts"] == "1726133698.626339" and "Deskmate" in greeting.args["text"]
    await slack_api.wait_for("assistant.threads.setSuggestedPrompts")

    event = direct_message("How do I reset my password?", channel="D111")
    assert (await slack.event(event)).status_code == 200
    row = await only_interaction(slack_stack)
    assert row.channel == "D111" and row.thread == "1726133698.626339"
    assert row.question_payload["channel_type"] == "im"
    # the thread's status says what is happening (no placeholder message in an assistant thread) …
    status = await slack_api.wait_for("assistant.threads.setStatus")
    assert status.args == {"channel_id": "D111", "thread_ts": "1726133698.626339",
                           "status": "Looking through the handbook…"}
    # … until the answer arrives in that thread (no model here: the extractive answer, delivered at once)
    answer = await slack_api.wait_for("chat.postMessage", count=2)
    assert answer.args["thread_ts"] == "1726133698.626339" and "[1]" in answer.text_of_blocks
    assert slack_api.calls_to("chat.update") == []


async def test_top_level_direct_message_is_answered_top_level(
        slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack) -> None:
    assert (await slack.event(direct_message("vpn not working", thread_ts=None))).status_code == 200
    placeholder = await slack_api.wait_for("chat.postMessage")
    assert placeholder.args["channel"] == DM and placeholder.args.get("thread_ts") is None
    row = await only_interaction(slack_stack)
    assert row.thread == DM, "a DM is one conversation: its turns share the channel as thread"
    await slack_api.wait_for("chat.update", ts=placeholder.response["ts"])


async def test_thread_follow_up_without_mention_is_answered_with_the_earlier_turn(
        slack_settings: Callable[..., Settings], slack_api: FakeSlack, fake_anthropic: Any) -> None:
    settings = slack_settings(anthropic_api_key="test-key", anthropic_base_url=fake_anthropic.url)
    async with running_stack(settings) as stack:
        slack = SlackClient(stack.client)
        first = mention("How much is the daily meal allowance when I travel?")
        root = first["event"]["ts"]
        await slack.event(first)
        first_placeholder = await slack_api.wait_for("chat.postMessage")
        await slack_api.wait_for("chat.update", ts=first_placeholder.response["ts"])

        # not for Deskmate: a reply in an unrelated thread, a top-level message, a colleague's reply in the
        # thread, and the asker's reply to that colleague
        await slack.event(channel_message("lunch anyone?", thread_ts="1500000000.000100"))
        await slack.event(channel_message("And for hotels?"))
        await slack.event(channel_message("It is 40 a day, I think", thread_ts=root, user="W333"))
        await slack.event(channel_message("<@W333> thanks!", thread_ts=root))
        follow_up = channel_message("And is there a limit for hotels?", thread_ts=root)
        await slack.event(follow_up)

        second_placeholder = await slack_api.wait_for("chat.postMessage", count=2)
        assert second_placeholder.args["thread_ts"] == root
        await slack_api.wait_for("chat.update", ts=second_placeholder.response["ts"])
        rows = await stack.interactions()
        assert [r.question for r in rows] == ["How much is the daily meal allowance when I travel?",
                                              "And is there a limit for hotels?"]
        assert rows[1].thread == root
        await stack.wait_final(rows[1].id)

    requests = fake_anthropic.message_requests
    answers = [r for r in requests if r.search_results]
    assert len(requests) == 3 and len(answers) == 2, "the follow-up's search query was rewritten first"
    assert "And is there a limit for hotels?" in str(requests[1].body["messages"])
    history = answers[1].body["messages"]
    flat = str(history)
    assert "How much is the daily meal allowance when I travel?" in flat, "the earlier question is sent"
    assert rows[0].answer and rows[0].answer.split("[")[0].strip()[:40] in flat, "and the earlier answer"


async def test_own_messages_bots_edits_deletions_and_chatter_are_ignored(
        slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack) -> None:
    own = fixture("message_bot_message.json")
    own["event"]["bot_id"] = "B111"  # Deskmate's own bot id (auth.test)
    other_bot = fixture("message_bot_message.json")
    other_bot["event_id"] = "EvOtherBot"
    broadcast_elsewhere = fixture("message_thread_broadcast.json")
    broadcast_elsewhere["event_id"] = "EvBroadcast"
    for payload in (own, other_bot, fixture("message_changed.json"), fixture("message_deleted.json"),
                    fixture("reaction_added.json"), broadcast_elsewhere, channel_message("Hello World!")):
        response = await slack.event(payload)
        assert response.status_code == 200, (payload["event"]["type"], response.text)
    await slack_stack.settle()  # listeners run after the ack: wait until they have (not) acted
    assert await slack_stack.interactions() == []
    assert slack_api.calls_to("chat.postMessage") == []


async def test_url_verification_is_answered(slack_stack: Stack, slack: SlackClient) -> None:
    payload = fixture("url_verification.json")
    response = await slack.event(payload)
    assert response.status_code == 200 and payload["challenge"] in response.text


async def test_retried_delivery_is_answered_once(slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack) -> None:
    event = mention("How many days of annual leave do I get?")
    first, retry, second_retry = await asyncio.gather(slack.event(event), slack.event(event, retry_num=1),
                                                      slack.event(event, retry_num=2))
    assert first.status_code == retry.status_code == second_retry.status_code == 200
    row = await only_interaction(slack_stack)
    placeholder = await slack_api.wait_for("chat.postMessage")
    await slack_api.wait_for("chat.update", ts=placeholder.response["ts"])
    late_retry = await slack.event(event, retry_num=3)
    assert late_retry.status_code == 200
    await slack_stack.settle()
    assert len(slack_api.calls_to("chat.postMessage")) == 1, "one placeholder"
    assert len(slack_api.calls_to("chat.update")) == 1, "one answer"
    assert [r.id for r in await slack_stack.interactions()] == [row.id]


async def test_public_channel_never_cites_restricted_sources_but_a_dm_may(
        slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack) -> None:
    question = "How does the engineering on-call rotation work and how is on-call compensated?"
    await slack.event(mention(question, channel=PUBLIC))
    public_placeholder = await slack_api.wait_for("chat.postMessage")
    public_answer = await slack_api.wait_for("chat.update", ts=public_placeholder.response["ts"])
    public_row = (await slack_stack.interactions())[0]
    public_row = await slack_stack.wait_final(public_row.id)
    assert public_row.question_payload["channel_type"] == "channel", "conversations.info: a public channel"
    assert not any(d.startswith("engineering/") for d in doc_ids(public_row)), doc_ids(public_row)
    assert "engineering" not in public_answer.text_of_blocks.lower().replace("engineering-", "")

    await slack.event(direct_message(question, thread_ts=None))
    dm_placeholder = await slack_api.wait_for("chat.postMessage", count=2)
    dm_answer = await slack_api.wait_for("chat.update", ts=dm_placeholder.response["ts"])
    dm_row = await slack_stack.wait_final((await slack_stack.interactions())[1].id)
    assert "engineering/on-call" in {s["doc_id"] for s in dm_row.sources}
    assert "handbook.northwind.example/engineering/on-call" in dm_answer.text_of_blocks

    await slack.event(mention(question, channel=PRIVATE))
    private_placeholder = await slack_api.wait_for("chat.postMessage", count=3)
    await slack_api.wait_for("chat.update", ts=private_placeholder.response["ts"])
    private_row = await slack_stack.wait_final((await slack_stack.interactions())[2].id)
    assert private_row.question_payload["channel_type"] == "group"
    assert "engineering/on-call" in {s["doc_id"] for s in private_row.sources}


async def test_unknown_channel_is_treated_as_public(slack_stack: Stack, slack: SlackClient,
                                                    slack_api: FakeSlack) -> None:
    await slack.event(mention("Who is on call this week in engineering?", channel="C0UNKNOWN"))
    placeholder = await slack_api.wait_for("chat.postMessage")
    await slack_api.wait_for("chat.update", ts=placeholder.response["ts"])
    row = await slack_stack.wait_final((await slack_stack.interactions())[0].id)
    assert row.question_payload["channel_type"] == "channel"
    assert not any(d.startswith("engineering/") for d in doc_ids(row))


async def test_channel_policy_all_messages_and_disabled(slack_stack: Stack, slack: SlackClient,
                                                        slack_api: FakeSlack) -> None:
    async with slack_stack.db.asession() as session:
        await set_policy(session, "slack", ALL, respond_to="all")
        await set_policy(session, "slack", PUBLIC, enabled=False)
    await slack.event(channel_message("How do I book travel?", channel=ALL))
    placeholder = await slack_api.wait_for("chat.postMessage")
    assert placeholder.args["channel"] == ALL
    await slack_api.wait_for("chat.update", ts=placeholder.response["ts"])

    await slack.event(mention("How do I book travel?", channel=PUBLIC))
    notice = await slack_api.wait_for("chat.postEphemeral")
    assert notice.args["channel"] == PUBLIC and notice.args["user"] == HUMAN
    assert "switched off" in notice.args["text"]
    assert [r.channel for r in await slack_stack.interactions()] == [ALL]


async def test_empty_mention_gets_a_hint_and_nothing_is_queued(slack_stack: Stack, slack: SlackClient,
                                                               slack_api: FakeSlack) -> None:
    await slack.event(mention("   "))
    hint = await slack_api.wait_for("chat.postEphemeral")
    assert "Ask me a question" in hint.args["text"]
    assert await slack_stack.interactions() == []


async def test_error_while_answering_is_shown_in_the_thread(slack_settings: Callable[..., Settings],
                                                            slack_api: FakeSlack) -> None:
    async with running_stack(slack_settings(job_max_tries=1)) as stack:
        async def broken_search(*_args: Any, **_kwargs: Any) -> Any:
            raise RuntimeError("index exploded")

        stack.worker.ctx["runtime"].retriever.asearch = broken_search
        event = mention("How do I book travel?")
        await SlackClient(stack.client).event(event)
        placeholder = await slack_api.wait_for("chat.postMessage")
        notice = await slack_api.wait_for("chat.update", ts=placeholder.response["ts"])
        assert "something went wrong" in notice.args["text"].lower()
        assert notice.args["channel"] == PUBLIC
        row = await stack.wait_final((await stack.interactions())[0].id)
        assert row.status == "error" and "index exploded" in (row.error or "")


async def test_rate_limited_update_is_retried_after_retry_after(slack_stack: Stack, slack: SlackClient,
                                                                slack_api: FakeSlack) -> None:
    slack_api.rate_limit_once("chat.update", retry_after=1)
    await slack.event(mention("How do I book travel?"))
    placeholder = await slack_api.wait_for("chat.postMessage")
    retried = await slack_api.wait_for("chat.update", lambda c: c.status == 200, ts=placeholder.response["ts"])
    limited = slack_api.calls_to("chat.update")[0]
    assert limited.status == 429
    assert retried.at - limited.at >= 1.0, "waited Retry-After before retrying"
    row = await slack_stack.wait_final((await slack_stack.interactions())[0].id)
    assert (await delivered(slack_stack, row.id)).get("method") == "chat.update"


@pytest.mark.parametrize("secret,age_s", [("forged-secret", 0), (None, 60 * 10)], ids=["forged", "stale"])
async def test_forged_or_stale_signature_is_refused_and_nothing_is_queued(
        slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack, secret: str | None, age_s: int) -> None:
    import json
    import time

    from tests.bot.slack.conftest import SIGNING_SECRET, sign

    body = json.dumps(mention("How do I book travel?"))
    headers = sign(body, secret or SIGNING_SECRET, timestamp=int(time.time()) - age_s)
    response = await slack.post_raw(body, "application/json", headers)
    assert response.status_code == 401
    unsigned = await slack.post_raw(body, "application/json")
    assert unsigned.status_code == 401
    await slack_stack.settle()
    assert await slack_stack.interactions() == []
    jobs = [k async for k in slack_stack.web_runtime.redis.scan_iter(match="arq:*deskmate:q:*")]
    assert jobs == [], "no answer job queued, running or finished"
    assert slack_api.calls_to("chat.postMessage") == []


async def test_signature_helper_matches_slacks_documented_vector() -> None:
    from tests.bot.slack.conftest import sign

    vector = fixture("signature_test_vector.json")
    headers = sign(vector["body"], vector["signing_secret"], timestamp=int(vector["timestamp"]))
    assert headers["X-Slack-Signature"] == vector["expected_signature"]


async def test_placeholder_failure_still_answers_in_the_thread(slack_stack: Stack, slack: SlackClient,
                                                               slack_api: FakeSlack) -> None:
    slack_api.fail("chat.postMessage", "internal_error")  # the placeholder is refused
    event = mention("How do I book travel?")
    await slack.event(event)
    answer = await slack_api.wait_for("chat.postMessage", lambda c: c.response.get("ok") is True)
    assert answer.args["thread_ts"] == event["event"]["ts"] and "[1]" in answer.text_of_blocks
    assert slack_api.calls_to("chat.update") == []


async def test_without_redis_claims_the_database_still_answers_a_redelivery_once(
        slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.intake import Intake

    async def unavailable(self: Intake, key: str) -> None:
        return None

    monkeypatch.setattr(Intake, "_claim", unavailable)
    event = mention("How do I book travel?")
    await slack.event(event)
    first = await slack_api.wait_for("chat.postMessage")
    await slack_api.wait_for("chat.update", ts=first.response["ts"])
    await slack.event(event, retry_num=1)
    second = await slack_api.wait_for("chat.postMessage", count=2)
    deleted = await slack_api.wait_for("chat.delete")
    assert deleted.args["ts"] == second.response["ts"], "the redelivery's placeholder is taken back"
    assert len(await slack_stack.interactions()) == 1 and len(slack_api.calls_to("chat.update")) == 1


async def test_question_that_cannot_be_recorded_gets_an_apology(
        slack_settings: Callable[..., Settings], slack_api: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the inbox's last try of the event (here its first); before that, the event is kept and tried again
    (test_inbox.py)."""
    from sqlalchemy.exc import OperationalError

    from bot import intake
    from bot.slack import inbox
    from feedback.interactions import InteractionStore

    async def locked(*_args: Any, **_kwargs: Any) -> Any:
        raise OperationalError("INSERT …", {}, Exception("database is locked"))

    monkeypatch.setattr(InteractionStore, "record_pending", locked)
    monkeypatch.setattr(intake, "RECORD_BACKOFF_S", (0.01,))
    monkeypatch.setattr(inbox, "MAX_DELIVERIES", 1)
    async with running_stack(slack_settings()) as stack:
        slack = SlackClient(stack.client)
        await slack.event(mention("How do I book travel?"))
        placeholder = await slack_api.wait_for("chat.postMessage")
        apology = await slack_api.wait_for("chat.update", ts=placeholder.response["ts"])
        assert "couldn't take your question" in apology.args["text"]
        assert await stack.interactions() == []

        await slack.event(mention("Wie viel Tagegeld bekomme ich auf einer Dienstreise nach Berlin?"))
        placeholder = await slack_api.wait_for("chat.postMessage", count=2)
        apology = await slack_api.wait_for("chat.update", ts=placeholder.response["ts"])
        assert apology.args["text"] == record_failed_reply("de") != intake.RECORD_FAILED_REPLY, "in the asker's language"
        assert "Frage gerade nicht annehmen" in apology.args["text"]


async def test_an_event_acknowledged_as_the_web_process_stops_is_answered_once(
        slack_settings: Callable[..., Settings], slack_api: FakeSlack) -> None:
    """Acked, so Slack will not resend it: the stopping web process hands it over (or leaves it in the inbox for
    the next one), and it is answered once."""
    settings = slack_settings()
    async with running_stack(settings, worker=False) as stack:
        slack_api.rate_limit_once("chat.postMessage", retry_after=1)  # keep the intake busy past shutdown
        response = await SlackClient(stack.client).event(mention("How do I book travel?"))
        assert response.status_code == 200
    async with running_stack(settings) as stack:
        placeholder = await slack_api.wait_for("chat.postMessage", lambda c: c.status == 200)
        await slack_api.wait_for("chat.update", ts=placeholder.response["ts"])
        await stack.settle()
        [row] = await stack.interactions()
    assert row.status in FINAL_STATUSES
    assert row.question_payload["reply_target"]["placeholder_ts"] == placeholder.response["ts"]
    assert len([c for c in slack_api.calls_to("chat.postMessage") if c.status == 200]) == 1
    assert len(slack_api.calls_to("chat.update")) == 1
