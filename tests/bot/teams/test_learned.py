"""Learned answers through Teams: "Ask a human" starts a thread in the support channel → a reply there → a draft
with a review card → a knowledge owner approves (or edits, or rejects) with ``Action.Execute`` → the next similar
question's card cites it. Recorded Teams activities, the fake Bot Framework connector, the real web app and worker."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from feedback.learned import APPROVED, DRAFT, EXPIRED, REJECTED, LearnedAnswer, LearnedStore
from feedback.models import Interaction
from knowledge.config import KnowledgeConfig
from knowledge.index import IndexStore
from tests.bot.teams.conftest import activity, card_text, post, settle
from tests.conftest import settings_for
from tests.fakes.botframework import Call, FakeConnector
from tests.learned_kb import QUESTION, REPLY, SIMILAR, TEAM, copy_kb, module_kb
from tests.stack import Stack, running_stack
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def small_kb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return module_kb(tmp_path_factory)


@pytest.fixture
def kb_data_dir(small_kb: Path, tmp_path: Path) -> Path:
    return copy_kb(small_kb, tmp_path)

SUPPORT = "19:support0123456789@thread.tacv2"
ASKING = "19:askers0123456789@thread.tacv2"  # a public team channel where people ask
OWNER_AAD = "11111111-2222-3333-4444-555555555555"
SUPPORT_AAD = "66666666-7777-8888-9999-000000000000"
ASKER_AAD = "6b703ce3-6d14-4fe6-b90c-dc5f03657ae4"  # the recorded fixture's sender
_ids = itertools.count(1_800_000_000_000)


@pytest.fixture
async def stack(kb_data_dir: Path, redis_url: str) -> AsyncIterator[Stack]:
    settings = settings_for(
        kb_data_dir, database_url=f"sqlite:///{kb_data_dir / 'deskmate.db'}", redis_url=redis_url,
        worker_poll_delay_s=0.02, sweeper_interval_s=1, sweeper_min_age_s=0.5, job_timeout_s=120, web_port=0,
        teams_delivery_backoff_s=0.02, teams_delivery_attempts=4, teams_support_channel=SUPPORT,
        knowledge_owners={"*": [OWNER_AAD]}, learned_teams={"*": TEAM})
    async with running_stack(settings) as running:
        yield running
        await settle(running)


def channel_post(connector: FakeConnector, text: str, *, channel: str, thread: str | None = None,
                 sender: tuple[str, str] = ("Dave Taniguchi", ASKER_AAD)) -> dict[str, Any]:
    """The recorded channel @mention, as a new post in ``channel`` (or a reply in ``thread``) by ``sender``."""
    post_id = str(next(_ids))
    body = activity("message_channel_mention", connector, id=post_id, text=f"<at>My Combined</at> {text}")
    body["conversation"] = dict(body["conversation"], id=thread or f"{channel};messageid={post_id}")
    body["channelData"] = dict(body["channelData"], channel={"id": channel}, teamsChannelId=channel)
    name, aad = sender
    body["from"] = dict(body["from"], name=name, aadObjectId=aad, id=f"29:{aad}")
    return body


async def ask(stack: Stack, connector: FakeConnector, text: str) -> tuple[Interaction, dict[str, Any], str]:
    """Ask in the public channel: (the answered row, the question activity, the answer card's text)."""
    body = channel_post(connector, text, channel=ASKING)
    before = {r.id for r in await stack.interactions()}
    assert (await post(stack, body)).status_code == 200
    row_id = await wait_until(lambda: _new_row(stack, before), timeout_s=60)
    row = await stack.wait_final(row_id)
    async with stack.db.asession() as session:
        stored = await session.get(Interaction, row.id)
    assert stored is not None and stored.delivery.get("ok")
    update = next(c for c in reversed(connector.of_kind("update", "reply", "send"))
                  if c.card is not None and c.activity_id == stored.delivery["activity_id"])
    assert update.card is not None
    return stored, body, card_text(update.card["body"])


async def _new_row(stack: Stack, before: set[int | None]) -> int | None:
    return next((r.id for r in await stack.interactions() if r.id not in before), None)


def execute(question: dict[str, Any], connector: FakeConnector, *, reply_to: str, data: dict[str, Any],
            sender: tuple[str, str], conversation: str | None = None) -> dict[str, Any]:
    """The recorded card-action invoke as an ``adaptiveCard/action`` (Action.Execute) on a card of ours."""
    body = activity("invoke_card_action", connector, name="adaptiveCard/action", replyToId=reply_to,
                    conversation=dict(question["conversation"], id=conversation or question["conversation"]["id"]),
                    channelData=question["channelData"],
                    value={"action": {"type": "Action.Execute", "verb": "deskmate.x", "data": data},
                           "trigger": "manual"})
    name, aad = sender
    body["from"] = dict(question["from"], name=name, aadObjectId=aad, id=f"29:{aad}")
    return body


async def escalate(stack: Stack, connector: FakeConnector, row: Interaction, question: dict[str, Any]) -> str:
    """Click "Ask a human": the conversation id of the thread started in the support channel."""
    response = await post(stack, execute(question, connector, reply_to=row.delivery["activity_id"],
                                         data={"deskmate": "escalate", "iid": row.id},
                                         sender=("Dave Taniguchi", ASKER_AAD)))
    assert response.status_code == 200
    [created] = connector.of_kind("create_conversation")
    assert created.body["channelData"]["channel"]["id"] == SUPPORT
    thread = str(created.response["id"])
    assert thread.startswith(f"{SUPPORT};messageid=")
    return thread


async def support_reply(stack: Stack, connector: FakeConnector, thread: str, text: str = REPLY) -> dict[str, Any]:
    body = channel_post(connector, text, channel=SUPPORT, thread=thread, sender=("Sam Support", SUPPORT_AAD))
    assert (await post(stack, body)).status_code == 200
    return body


def review_card_call(connector: FakeConnector, thread: str) -> Call:
    return next(c for c in connector.of_kind("send", "reply")
                if c.conversation_id == thread and c.card and "Draft learned answer" in card_text(c.card["body"]))


async def draft_of(stack: Stack) -> LearnedAnswer:
    rows = await wait_until(lambda: LearnedStore(stack.db).with_status(DRAFT, APPROVED, REJECTED, EXPIRED),
                            timeout_s=60)
    assert len(rows) == 1
    return rows[0]


async def indexed(stack: Stack, learned_id: int) -> LearnedAnswer:
    store = LearnedStore(stack.db)

    async def probe() -> LearnedAnswer | None:
        row = await store.get(learned_id)
        return row if row is not None and row.indexed_version is not None else None

    row: LearnedAnswer = await wait_until(probe, timeout_s=60)
    return row


async def test_a_reply_in_the_support_thread_is_approved_on_its_card_then_cited(stack: Stack,
                                                                                connector: FakeConnector) -> None:
    row, question, first = await ask(stack, connector, QUESTION)
    assert f"Answered by {TEAM}" not in first
    thread = await escalate(stack, connector, row, question)

    reply = await support_reply(stack, connector, thread)
    draft = await draft_of(stack)
    assert (draft.question, draft.answer, draft.answered_by, draft.answered_by_id) == (
        QUESTION, REPLY, "Sam Support", SUPPORT_AAD)
    assert draft.public, "asked in a team channel"
    assert draft.thread_url and draft.thread_url.startswith("https://teams.microsoft.com/l/message/")
    card_call = await connector.wait_for(lambda calls: review_card_call(connector, thread))
    assert card_call.card is not None
    columns = next(e for e in card_call.card["body"] if e["type"] == "ColumnSet")["columns"]
    assert QUESTION in card_text(columns[0]["items"]) and REPLY in card_text(columns[1]["items"]), "side by side"
    assert len(await stack.interactions()) == 1, "the reply was not taken for a question"

    # the person who answered is no knowledge owner: the card says so and nothing changes
    refused = await post(stack, execute(reply, connector, reply_to=card_call.response["id"], conversation=thread,
                                        data={"deskmate_learned": "approve", "lid": draft.id},
                                        sender=("Sam Support", SUPPORT_AAD)))
    assert "knowledge owner" in card_text(refused.json()["value"]["body"])
    assert (await LearnedStore(stack.db).get(draft.id or 0)).status == DRAFT  # type: ignore[union-attr]

    approved = await post(stack, execute(reply, connector, reply_to=card_call.response["id"], conversation=thread,
                                         data={"deskmate_learned": "approve", "lid": draft.id},
                                         sender=("Olivia Owner", OWNER_AAD)))
    assert approved.status_code == 200
    assert f"Answered by {TEAM} on" in card_text(approved.json()["value"]["body"])
    assert "actions" not in approved.json()["value"], "decided: no more buttons"
    await indexed(stack, draft.id or 0)

    _, _, answer = await ask(stack, connector, SIMILAR)
    assert f"Answered by {TEAM} on" in answer, answer


async def test_edit_on_the_card_approves_the_edited_text_and_reject_withdraws_it(stack: Stack,
                                                                                 connector: FakeConnector) -> None:
    row, question, _ = await ask(stack, connector, QUESTION)
    thread = await escalate(stack, connector, row, question)
    reply = await support_reply(stack, connector, thread)
    draft = await draft_of(stack)
    card_call = await connector.wait_for(lambda calls: review_card_call(connector, thread))
    edited = REPLY + " Visitors get a day pass from reception instead."
    response = await post(stack, execute(reply, connector, reply_to=card_call.response["id"], conversation=thread,
                                         data={"deskmate_learned": "edit", "lid": draft.id, "learned_text": edited},
                                         sender=("Olivia Owner", OWNER_AAD)))
    assert "(edited)" in card_text(response.json()["value"]["body"])
    approved = await indexed(stack, draft.id or 0)
    assert approved.answer == edited and approved.reviewed_by == OWNER_AAD
    _, _, answer = await ask(stack, connector, "Can visitors get a day pass for the office garage?")
    assert f"Answered by {TEAM} on" in answer and "day pass" in answer

    withdrawn = await post(stack, execute(reply, connector, reply_to=card_call.response["id"], conversation=thread,
                                          data={"deskmate_learned": "reject", "lid": draft.id},
                                          sender=("Olivia Owner", OWNER_AAD)))
    assert "rejected" in card_text(withdrawn.json()["value"]["body"])
    version = approved.indexed_version or 0
    store = stack.web_runtime.learned.store
    assert (await store.get(draft.id or 0)).status == REJECTED  # type: ignore[union-attr]

    async def newer() -> bool:
        latest = IndexStore(KnowledgeConfig.from_settings(stack.settings)).latest_version("default")
        return latest is not None and latest > version

    await wait_until(newer, timeout_s=60)
    _, _, after = await ask(stack, connector, "Can visitors get a day pass for the office garage?")
    assert f"Answered by {TEAM} on" not in after
