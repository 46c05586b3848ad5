"""Learned answers through Slack: "Ask a human" → a reply in the support thread → a draft → a knowledge owner's
review → the next similar question answered citing it. The real web app and worker, the fake Slack Web API,
requests signed as Slack signs them; a small knowledge base of the test's own (tests/learned_kb.py)."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.core.clock import utcnow
from bot.core.settings import Settings
from feedback.learned import APPROVED, DRAFT, EXPIRED, REJECTED, LearnedAnswer, LearnedStore
from feedback.models import Interaction
from knowledge.config import KnowledgeConfig
from knowledge.index import IndexStore
from tests.bot.slack.conftest import (
    HUMAN,
    PRIVATE,
    PUBLIC,
    SIGNING_SECRET,
    SUPPORT,
    SlackClient,
    block_action,
    channel_message,
    fixture,
    mention,
    unique_ts,
)
from tests.conftest import settings_for
from tests.fakes.slack_api import Call, FakeSlack
from tests.learned_kb import OWNER, QUESTION, REPLY, SIMILAR, SUPPORT_PERSON, TEAM, copy_kb, module_kb
from bot.worker import learned_expire
from tests.stack import Stack, running_stack
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def small_kb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return module_kb(tmp_path_factory)


@pytest.fixture
def kb_data_dir(small_kb: Path, tmp_path: Path) -> Path:
    return copy_kb(small_kb, tmp_path)


@pytest.fixture
def learned_settings(kb_data_dir: Path, redis_url: str, slack_api: FakeSlack) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = dict(
            database_url=f"sqlite:///{kb_data_dir / 'deskmate.db'}", redis_url=redis_url, worker_poll_delay_s=0.02,
            sweeper_interval_s=1, sweeper_min_age_s=0.5, job_timeout_s=120, web_port=0,
            slack_bot_token="xoxb-test-token", slack_signing_secret=SIGNING_SECRET,
            slack_api_url=slack_api.api_url, slack_support_channel=SUPPORT,
            knowledge_owners={"*": [OWNER]}, learned_teams={"*": TEAM})
        values.update(overrides)
        return settings_for(kb_data_dir, **values)

    return make


@pytest.fixture
async def stack(learned_settings: Callable[..., Settings]) -> AsyncIterator[Stack]:
    async with running_stack(learned_settings()) as running:
        yield running


@pytest.fixture
def slack(stack: Stack) -> SlackClient:
    return SlackClient(stack.client)


async def ask(stack: Stack, slack: SlackClient, slack_api: FakeSlack, text: str, *,
              channel: str = PUBLIC) -> tuple[Interaction, Call]:
    """@Deskmate ``text`` in ``channel``: the final row and the chat.update that delivered it."""
    body = mention(text, channel=channel)
    before = {r.id for r in await stack.interactions()}
    await slack.event(body)
    row_id = await wait_until(lambda: _new_row(stack, before), timeout_s=60)
    row = await stack.wait_final(row_id)
    placeholder_ts = row.question_payload["reply_target"]["placeholder_ts"]
    update = await slack_api.wait_for("chat.update", ts=placeholder_ts)
    return row, update


async def _new_row(stack: Stack, before: set[int | None]) -> int | None:
    return next((r.id for r in await stack.interactions() if r.id not in before), None)


async def escalate(stack: Stack, slack: SlackClient, slack_api: FakeSlack, row: Interaction, update: Call,
                   *, channel: str = PUBLIC) -> str:
    """Click "Ask a human" on the answer: returns the ts of the support-channel post (the thread root)."""
    click = block_action("deskmate_escalate", str(row.id), channel=channel, message_ts=update.args["ts"],
                         response_url=slack_api.response_url("human"))
    assert (await slack.interactive(click)).status_code == 200
    posted = await slack_api.wait_for("chat.postMessage", channel=SUPPORT)
    await slack_api.wait_for("response_url")
    return str(posted.response["ts"])


async def support_reply(slack: SlackClient, slack_api: FakeSlack, thread_ts: str, text: str = REPLY,
                        user: str = SUPPORT_PERSON) -> str:
    """A support person replies in the thread: the message as Slack holds it, and the event Slack sends."""
    ts = slack_api.user_message(SUPPORT, text, user=user, thread_ts=thread_ts)
    body = channel_message(text, channel=SUPPORT, thread_ts=thread_ts, user=user)
    body["event"].update(ts=ts, event_ts=ts)
    assert (await slack.event(body)).status_code == 200
    return ts


async def learned_rows(stack: Stack) -> list[LearnedAnswer]:
    return await LearnedStore(stack.db).with_status(DRAFT, APPROVED, REJECTED, EXPIRED)


async def draft_of(stack: Stack) -> LearnedAnswer:
    rows = await wait_until(lambda: learned_rows(stack), timeout_s=60)
    assert len(rows) == 1
    return rows[0]


async def indexed(stack: Stack, learned_id: int, *, after: int | None = None) -> LearnedAnswer:
    """The learned answer once a refresh has put its current text in an index version (newer than ``after``)."""
    store = LearnedStore(stack.db)

    async def probe() -> LearnedAnswer | None:
        row = await store.get(learned_id)
        if row is not None and row.indexed_version is not None and (after is None or row.indexed_version > after):
            return row
        return None

    row: LearnedAnswer = await wait_until(probe, timeout_s=60)
    return row


def review_prompt(slack_api: FakeSlack, thread_ts: str) -> Call:
    return next(c for c in slack_api.calls_to("chat.postMessage", channel=SUPPORT, thread_ts=thread_ts)
                if "Draft learned answer" in c.text_of_blocks)


def review_click(action: str, learned_id: int, prompt_ts: str, slack_api: FakeSlack, *,
                 user: str = OWNER) -> dict[str, Any]:
    return block_action(action, str(learned_id), channel=SUPPORT, message_ts=prompt_ts,
                        response_url=slack_api.response_url(f"review-{action}"), user=user)


def cites_learned(update: Call) -> bool:
    return f"Answered by {TEAM} on" in update.text_of_blocks


def latest_version(settings: Settings) -> int:
    version = IndexStore(KnowledgeConfig.from_settings(settings)).latest_version("default")
    assert version is not None
    return version


async def test_a_reply_in_the_support_thread_is_reviewed_then_cited_by_the_next_similar_question(
        stack: Stack, slack: SlackClient, slack_api: FakeSlack) -> None:
    row, update = await ask(stack, slack, slack_api, QUESTION)
    assert not cites_learned(update)
    thread_ts = await escalate(stack, slack, slack_api, row, update)

    reply_ts = await support_reply(slack, slack_api, thread_ts)
    draft = await draft_of(stack)
    assert (draft.status, draft.question, draft.answer) == (DRAFT, QUESTION, REPLY)
    assert draft.answered_by_id == SUPPORT_PERSON and draft.public, "asked in a public channel"
    assert draft.thread_url and reply_ts.replace(".", "") in draft.thread_url, "links to the reply"
    prompt = await slack_api.wait_for("chat.postMessage", lambda c: "Draft learned answer" in c.text_of_blocks,
                                      channel=SUPPORT, thread_ts=thread_ts)
    fields = next(b for b in prompt.args["blocks"] if b.get("fields"))["fields"]
    assert QUESTION in fields[0]["text"] and "Parking permits" in fields[1]["text"], "side by side"
    version_before = latest_version(stack.settings)

    # nothing unreviewed is used: the same question again is still not answered from the reply
    _, again = await ask(stack, slack, slack_api, SIMILAR)
    assert not cites_learned(again)

    # someone who is not a knowledge owner cannot approve
    await slack.interactive(review_click("deskmate_learned_approve", draft.id or 0, prompt.response["ts"], slack_api,
                                         user=HUMAN))
    refusal = await slack_api.wait_for("response_url", lambda c: "knowledge owner" in c.args.get("text", ""))
    assert refusal.args["response_type"] == "ephemeral"
    assert (await LearnedStore(stack.db).get(draft.id or 0)).status == DRAFT  # type: ignore[union-attr]

    await slack.interactive(review_click("deskmate_learned_approve", draft.id or 0, prompt.response["ts"], slack_api))
    approved = await indexed(stack, draft.id or 0)
    assert approved.status == APPROVED and approved.reviewed_by == OWNER
    assert approved.indexed_version == latest_version(stack.settings) > version_before
    decided = await slack_api.wait_for("chat.update", lambda c: "approved" in c.text_of_blocks,
                                       ts=prompt.response["ts"])
    assert f"Answered by {TEAM} on" in decided.text_of_blocks

    _, answer = await ask(stack, slack, slack_api, SIMILAR)
    assert cites_learned(answer), answer.text_of_blocks
    assert "northwind.slack.com/archives/" in answer.text_of_blocks, "the citation links to the support thread"
    final = await stack.row((await stack.interactions())[-1].id or 0)
    assert any(s["doc_id"] == approved.doc_id for s in final.sources)
    assert approved.doc_id and approved.doc_id.startswith("learned/")


async def test_edit_then_approve_cites_the_edited_text_and_reject_keeps_it_out(
        stack: Stack, slack: SlackClient, slack_api: FakeSlack) -> None:
    row, update = await ask(stack, slack, slack_api, QUESTION)
    thread_ts = await escalate(stack, slack, slack_api, row, update)
    await support_reply(slack, slack_api, thread_ts, text="Ask Facilities, they do parking permits for the garage.")
    # the support person then marks a better message with ✅: it replaces the first reply
    better_ts = await support_reply(slack, slack_api, thread_ts)
    await slack_api.wait_for("chat.postMessage", lambda c: "Draft learned answer" in c.text_of_blocks,
                             channel=SUPPORT, thread_ts=thread_ts)
    reaction = copy.deepcopy(fixture("reaction_added.json"))
    reaction["event_id"] = f"Ev{unique_ts().replace('.', '')}"
    reaction["event"].update(user=SUPPORT_PERSON, reaction="white_check_mark", item_user=SUPPORT_PERSON,
                             item={"type": "message", "channel": SUPPORT, "ts": better_ts})
    assert (await slack.event(reaction)).status_code == 200
    await stack.settle()
    draft = await draft_of(stack)
    assert (draft.answer, draft.origin) == (REPLY, "marked")
    prompt = review_prompt(slack_api, thread_ts)

    # Edit opens a modal with the reply; its submission approves the edited text
    await slack.interactive(review_click("deskmate_learned_edit", draft.id or 0, prompt.response["ts"], slack_api))
    opened = await slack_api.wait_for("views.open")
    modal = opened.args["view"]
    assert modal["callback_id"] == "deskmate_learned_edit_view"
    assert REPLY in json.dumps(modal["blocks"])
    edited_text = REPLY + " Visitors get a day pass from reception instead."
    submission = copy.deepcopy(fixture("view_submission.json"))
    submission["user"]["id"] = OWNER
    submission["view"].update(callback_id="deskmate_learned_edit_view", private_metadata=modal["private_metadata"],
                              state={"values": {"deskmate_learned_text": {"deskmate_learned_text": {
                                  "type": "plain_text_input", "value": edited_text}}}})
    assert (await slack.interactive(submission)).status_code == 200
    approved = await indexed(stack, draft.id or 0)
    assert approved.edited and approved.answer == edited_text
    _, answer = await ask(stack, slack, slack_api, "Can visitors get a day pass for the office garage?")
    assert cites_learned(answer) and "day pass" in answer.text_of_blocks

    # withdrawn: rejected after approval, it leaves the index
    await slack.interactive(review_click("deskmate_learned_reject", draft.id or 0, prompt.response["ts"], slack_api))
    version = approved.indexed_version or 0
    await wait_until(lambda: _later_version(stack.settings, version), timeout_s=60)
    assert (await LearnedStore(stack.db).get(draft.id or 0)).status == REJECTED  # type: ignore[union-attr]
    _, after = await ask(stack, slack, slack_api, "Can visitors get a day pass for the office garage?")
    assert not cites_learned(after)


async def _later_version(settings: Settings, version: int) -> bool:
    return latest_version(settings) > version


async def test_a_rejected_draft_is_never_indexed(stack: Stack, slack: SlackClient, slack_api: FakeSlack) -> None:
    row, update = await ask(stack, slack, slack_api, QUESTION)
    thread_ts = await escalate(stack, slack, slack_api, row, update)
    await support_reply(slack, slack_api, thread_ts)
    draft = await draft_of(stack)
    prompt = await slack_api.wait_for("chat.postMessage", lambda c: "Draft learned answer" in c.text_of_blocks,
                                      channel=SUPPORT, thread_ts=thread_ts)
    version = latest_version(stack.settings)
    await slack.interactive(review_click("deskmate_learned_reject", draft.id or 0, prompt.response["ts"], slack_api))
    await slack_api.wait_for("chat.update", lambda c: "rejected" in c.text_of_blocks, ts=prompt.response["ts"])
    await stack.settle()
    assert (await LearnedStore(stack.db).get(draft.id or 0)).status == REJECTED  # type: ignore[union-attr]
    assert latest_version(stack.settings) == version, "nothing was written to the index"
    assert not list((stack.settings.learned_dir()).rglob("*.md"))
    _, again = await ask(stack, slack, slack_api, SIMILAR)
    assert not cites_learned(again)


async def test_an_answer_given_in_a_private_channel_stays_restricted_and_expires(
        stack: Stack, slack: SlackClient, slack_api: FakeSlack) -> None:
    row, update = await ask(stack, slack, slack_api, QUESTION, channel=PRIVATE)
    thread_ts = await escalate(stack, slack, slack_api, row, update, channel=PRIVATE)
    # "Use as answer" on the reply (a message shortcut) makes the draft too
    reply_ts = slack_api.user_message(SUPPORT, REPLY, user=SUPPORT_PERSON, thread_ts=thread_ts)
    shortcut = copy.deepcopy(fixture("message_shortcut.json"))
    shortcut.update(callback_id="deskmate_use_as_answer", channel={"id": SUPPORT, "name": "support"},
                    user={"id": SUPPORT_PERSON, "name": "sam"}, message_ts=reply_ts,
                    response_url=slack_api.response_url("use"),
                    message={"type": "message", "text": REPLY, "user": SUPPORT_PERSON, "ts": reply_ts,
                             "thread_ts": thread_ts})
    assert (await slack.interactive(shortcut)).status_code == 200
    confirmation = await slack_api.wait_for("response_url", lambda c: "draft learned answer" in c.args.get("text", ""))
    assert confirmation.args["response_type"] == "ephemeral"
    draft = await draft_of(stack)
    assert not draft.public, "asked in a private channel: restricted"
    prompt = review_prompt(slack_api, thread_ts)
    await slack.interactive(review_click("deskmate_learned_approve", draft.id or 0, prompt.response["ts"], slack_api))
    approved = await indexed(stack, draft.id or 0)
    document = next(stack.settings.learned_dir().rglob("*.md")).read_text()
    assert "visibility: restricted" in document

    _, public = await ask(stack, slack, slack_api, SIMILAR, channel=PUBLIC)
    assert not cites_learned(public), "a public channel never sees an answer given in a private one"
    _, private = await ask(stack, slack, slack_api, SIMILAR, channel=PRIVATE)
    assert cites_learned(private)

    # past its review date, it leaves the index (the worker's cron runs this every minute) until re-approved
    store = LearnedStore(stack.db)
    await store.update(draft.id or 0, review_by=utcnow() - timedelta(minutes=1))
    assert await learned_expire(stack.worker.ctx) == 1  # the worker's cron job
    await wait_until(lambda: _later_version(stack.settings, approved.indexed_version or 0), timeout_s=60)
    due = await slack_api.wait_for("chat.update", lambda c: "due for review" in c.text_of_blocks,
                                   ts=prompt.response["ts"])
    assert "deskmate_learned_approve" in json.dumps(due.args["blocks"]), "the owners can approve it again"
    _, after = await ask(stack, slack, slack_api, SIMILAR, channel=PRIVATE)
    assert not cites_learned(after)
    assert (await store.get(draft.id or 0)).status == EXPIRED  # type: ignore[union-attr]


async def test_a_knowledge_owners_thumbs_down_correction_becomes_a_draft(
        stack: Stack, slack: SlackClient, slack_api: FakeSlack) -> None:
    row, update = await ask(stack, slack, slack_api, "How do I book travel?", channel=PRIVATE)
    submission = copy.deepcopy(fixture("view_submission.json"))
    submission["user"]["id"] = OWNER
    correction = "Since March, book all travel through the new Navan portal, not the travel agency."
    submission["view"].update(callback_id="deskmate_feedback", private_metadata=json.dumps(
        {"interaction_id": row.id, "channel": PRIVATE, "message_ts": update.args["ts"]}),
        state={"values": {"comment": {"comment": {"type": "plain_text_input", "value": correction}}}})
    assert (await slack.interactive(submission)).status_code == 200
    draft = await draft_of(stack)
    assert (draft.status, draft.origin, draft.answer) == (DRAFT, "correction", correction)
    prompt = await slack_api.wait_for("chat.postMessage", lambda c: "Draft learned answer" in c.text_of_blocks,
                                      channel=SUPPORT)
    assert "correction" in prompt.text_of_blocks

    # the same comment from someone who owns nothing stays a 👎 comment only
    submission["user"]["id"] = HUMAN
    assert (await slack.interactive(submission)).status_code == 200
    await stack.settle()
    assert len(await learned_rows(stack)) == 1
