"""The local chat is a development convenience unless an operator turns it on; then it needs a signed-in user,
cites public sources only, and a caller reads and votes only on its own conversation's questions — through the
real aiohttp app (``running_stack``), the real queue and worker where an answer is needed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from bot.core.identity import hash_user
from bot.core.settings import Settings
from bot.core.types import Platform, Question
from bot.local_chat import access
from bot.local_chat.access import CONVERSATION_HEADER, Caller
from feedback.models import Feedback, Interaction
from knowledge.config import KnowledgeConfig
from knowledge.index import IndexStore
from knowledge.ingest import ingest
from tests.conftest import settings_for
from tests.stack import Stack, running_stack

TOKEN = "local-chat-test-token-0123456789"
SSO = "X-Forwarded-Email"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ALICE, BOB = {SSO: "alice@example.com"}, {SSO: "bob@example.com"}
ROUTES = [("GET", "/"), ("GET", "/chat"), ("GET", "/chat/api/reasons"), ("GET", "/chat/api/interactions/1"),
          ("POST", "/chat/api/ask"), ("POST", "/chat/api/feedback")]
ON_IN_PRODUCTION = {"environment": "production", "local_chat": "on", "dashboard_token": TOKEN,
                    "dashboard_sso_header": SSO}


@pytest.fixture
async def production(make_settings: Callable[..., Settings]) -> AsyncIterator[Stack]:
    """Turned on in production, with the dashboard's sign-in (token and SSO header); no worker."""
    async with running_stack(make_settings(**ON_IN_PRODUCTION), worker=False) as stack:
        yield stack


@pytest.fixture
async def development(make_settings: Callable[..., Settings]) -> AsyncIterator[Stack]:
    async with running_stack(make_settings(), worker=False) as stack:
        yield stack


async def call(stack: Stack, method: str, path: str, headers: dict[str, str] | None = None,
               body: dict[str, Any] | None = None) -> Any:
    payload = body if body is not None else ({"text": "How do I connect to the VPN?"} if path.endswith("/ask")
                                             else {"interaction_id": 1, "label": "up"})
    if method == "GET":
        return await stack.client.get(path, headers=headers or {}, follow_redirects=False)
    return await stack.client.post(path, json=payload, headers=headers or {})


async def start(stack: Stack, headers: dict[str, str] | None = None,
                text: str = "How do I connect to the VPN?") -> tuple[int, str]:
    """A new conversation's first question: its interaction id and the conversation's token."""
    response = await call(stack, "POST", "/chat/api/ask", headers, {"text": text})
    assert response.status_code == 202, response.text
    return response.json()["interaction_id"], response.json().get("conversation", "")


def with_token(token: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    return {**(headers or {}), CONVERSATION_HEADER: token}


async def feedback_rows(stack: Stack) -> list[Feedback]:
    async with stack.db.asession() as session:
        return list((await session.exec(select(Feedback))).all())


# --- mounted or not ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [{"environment": "production"}, {"local_chat": "off"},
                                       {"environment": "production", "local_chat": "off", "dashboard_token": TOKEN}],
                         ids=["production-by-default", "off-in-development", "off-in-production"])
async def test_not_mounted_in_production_by_default_nor_when_off(make_settings: Callable[..., Settings],
                                                                 overrides: dict[str, Any]) -> None:
    async with running_stack(make_settings(**overrides), worker=False) as stack:
        for method, path in ROUTES:
            response = await call(stack, method, path, BEARER)
            assert response.status_code == 404, (method, path, response.status_code)
        assert await stack.interactions() == []


def test_development_defaults_keep_the_local_chat_local() -> None:
    settings = settings_for(Path("unused"))
    assert settings.web_host == "127.0.0.1", "the development web process listens on this machine only"
    assert access.enabled(settings) and not access.sign_in_required(settings)
    production = settings_for(Path("unused"), environment="production")
    assert not access.enabled(production) and access.public_sources_only(production)
    assert access.channel_type(production) == "public" and access.channel_type(settings) == "im"
    granted = settings_for(Path("unused"), environment="production", local_chat="on", local_chat_sources="all")
    assert access.enabled(granted) and access.channel_type(granted) == "im"
    assert access.channel_type(settings_for(Path("unused"), local_chat_sources="public")) == "public"


# --- sign-in in production --------------------------------------------------------------------------------------

async def test_on_in_production_every_route_needs_a_signed_in_user(production: Stack) -> None:
    for method, path in ROUTES[1:]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {SSO: ""}):
            response = await call(production, method, path, headers)
            assert response.status_code == 401, (method, path, headers, response.status_code)
    api = await call(production, "POST", "/chat/api/ask")
    assert "signed-in user" in api.json()["detail"] and api.headers["Cache-Control"] == "no-store"
    assert await production.interactions() == [], "nothing was asked"

    assert (await production.client.get("/chat?token=wrong")).status_code == 401
    signed_in = await production.client.get(f"/chat?token={TOKEN}", follow_redirects=False)
    assert signed_in.status_code == 302 and signed_in.headers["location"] == "/chat", "the token leaves the URL"
    cookie = signed_in.headers["set-cookie"]
    assert "Path=/chat" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    page = await production.client.get("/chat")  # the client keeps the cookie
    assert page.status_code == 200 and "Deskmate" in page.text
    assert (await call(production, "GET", "/chat", BEARER)).status_code == 200
    assert (await call(production, "GET", "/chat", ALICE)).status_code == 200


async def test_on_in_production_without_any_sign_in_configured_refuses_everyone(
        make_settings: Callable[..., Settings]) -> None:
    async with running_stack(make_settings(environment="production", local_chat="on"), worker=False) as stack:
        response = await call(stack, "POST", "/chat/api/ask", {SSO: "alice@example.com"})
        assert response.status_code == 401
        assert "DESKMATE_DASHBOARD_SSO_HEADER" in response.json()["detail"]


# --- sources ----------------------------------------------------------------------------------------------------

async def test_production_cites_public_sources_never_restricted_ones(make_settings: Callable[..., Settings]) -> None:
    async with running_stack(make_settings(**ON_IN_PRODUCTION)) as stack:
        restricted, token = await start(stack, BEARER, "How does the engineering on-call rotation work and how is "
                                                       "on-call compensated?")
        public, _ = await start(stack, BEARER, "How much is the daily meal allowance when I travel?")
        rows = {i: await stack.wait_final(i) for i in (restricted, public)}
    assert rows[restricted].question_payload["channel_type"] == "public"
    assert not any(s["doc_id"].startswith(("engineering/", "security/")) for s in rows[restricted].sources), \
        rows[restricted].sources
    assert "travel/per-diem" in {s["doc_id"] for s in rows[public].sources}


async def test_development_may_cite_every_source(make_settings: Callable[..., Settings]) -> None:
    async with running_stack(make_settings()) as stack:
        interaction_id, _ = await start(stack, text="How does the engineering on-call rotation work and how is "
                                                    "on-call compensated?")
        row = await stack.wait_final(interaction_id)
    assert row.question_payload["channel_type"] == "im"
    assert "engineering/on-call" in {s["doc_id"] for s in row.sources}


# --- conversations ----------------------------------------------------------------------------------------------

async def test_a_caller_reads_and_votes_only_in_its_own_conversation(production: Stack) -> None:
    alices, alice_token = await start(production, ALICE)
    bobs, bob_token = await start(production, BOB)
    conversation = alice_token.split(".")[0]
    assert len(conversation) == 32 and alice_token != bob_token
    row = next(r for r in await production.interactions() if r.id == alices)
    assert row.channel == f"local:{conversation}" and row.thread == conversation

    own = await call(production, "GET", f"/chat/api/interactions/{alices}", with_token(alice_token, ALICE))
    assert own.status_code == 200 and own.json()["interaction_id"] == alices
    follow_up = await call(production, "POST", "/chat/api/ask", with_token(alice_token, ALICE), {"text": "and Wi-Fi?"})
    assert follow_up.json()["conversation"] == alice_token, "a follow-up stays in the conversation"

    for token, headers in ((bob_token, BOB), (alice_token, BOB)):  # another conversation; someone else's token
        other = await call(production, "GET", f"/chat/api/interactions/{alices}", with_token(token, headers))
        assert other.status_code in (403, 404), (token == alice_token, other.status_code)
        vote = await call(production, "POST", "/chat/api/feedback", with_token(token, headers),
                          {"interaction_id": alices, "label": "down"})
        assert vote.status_code in (403, 404)
    assert (await call(production, "GET", f"/chat/api/interactions/{alices}", with_token(bob_token, BOB))
            ).status_code == 404, "another conversation's question does not exist for this caller"
    forged = [f"{conversation}.{'A' * 24}", conversation, "c1", f"{'x' * 32}.{alice_token.split('.')[1]}", ""]
    for token in forged:
        headers = {**ALICE, CONVERSATION_HEADER: token} if token else ALICE
        read = await call(production, "GET", f"/chat/api/interactions/{alices}", headers)
        assert read.status_code == 403, (token, read.status_code)
    chosen = await call(production, "POST", "/chat/api/ask", {**ALICE, CONVERSATION_HEADER: "c1"})
    assert chosen.status_code == 403, "a client does not choose its conversation"
    assert await feedback_rows(production) == []
    assert bobs != alices


async def test_slack_and_teams_interactions_are_never_served(development: Stack) -> None:
    interactions = development.web_runtime.interactions
    others = [await interactions.record_pending(Question(
        idempotency_key=f"{platform.value}:{uuid.uuid4().hex}", platform=platform, channel=channel, thread="1",
        user="U1", text="What is in my private DM?", channel_type="im")) for platform, channel in
        ((Platform.SLACK, "D0DIRECT"), (Platform.TEAMS, "a:personal"))]
    _, token = await start(development)
    for other_id, _duplicate in others:
        read = await call(development, "GET", f"/chat/api/interactions/{other_id}", with_token(token))
        assert read.status_code == 404 and "private" not in read.text
        vote = await call(development, "POST", "/chat/api/feedback", with_token(token),
                          {"interaction_id": other_id, "label": "down"})
        assert vote.status_code == 404
    # not even with a token for the channel's own name: a Slack channel is not a local conversation
    read = await call(development, "GET", f"/chat/api/interactions/{others[0][0]}",
                      with_token(f"D0DIRECT.{'A' * 24}"))
    assert read.status_code == 403
    assert await feedback_rows(development) == []


# --- votes ------------------------------------------------------------------------------------------------------

async def test_votes_are_recorded_under_the_signed_in_user_not_a_name_the_client_sends(production: Stack) -> None:
    interaction_id, token = await start(production, ALICE)
    vote = await call(production, "POST", "/chat/api/feedback", with_token(token, ALICE),
                      {"interaction_id": interaction_id, "label": "up", "user": "mallory"})
    assert vote.status_code == 200, vote.text
    salt = production.settings.user_hash_salt
    [row] = await feedback_rows(production)
    assert row.user_hash == hash_user("sso:alice@example.com", salt) != hash_user("mallory", salt)
    [asked] = await production.interactions()
    assert asked.user_hash == row.user_hash, "the question too is the signed-in user's"


async def test_votes_in_development_are_the_conversations(development: Stack) -> None:
    interaction_id, token = await start(development)
    for user in ("mallory", "local-user"):
        vote = await call(development, "POST", "/chat/api/feedback", with_token(token),
                          {"interaction_id": interaction_id, "label": "up", "user": user})
        assert vote.status_code == 200, vote.text
    [row] = await feedback_rows(development)
    assert row.user_hash == hash_user(f"local-conversation:{token.split('.')[0]}", development.settings.user_hash_salt)


def test_tokens_are_bound_to_their_caller_and_this_servers_key() -> None:
    settings = settings_for(Path("unused"), user_hash_salt="one")
    alice, bob = Caller("sso:alice@example.com"), Caller("sso:bob@example.com")
    conversation, token = access.issue(settings, alice)
    assert access.conversation_of(token, settings, alice) == conversation
    assert access.conversation_of(token, settings, bob) is None
    assert access.conversation_of(token, settings_for(Path("unused"), user_hash_salt="two"), alice) is None
    assert access.issue(settings, alice)[0] != conversation


# --- locations in the JSON --------------------------------------------------------------------------------------

async def test_the_json_shows_paths_below_the_source_folder_never_server_paths(
        tmp_path: Path, redis_url: str) -> None:
    kb = (tmp_path / "srv" / "knowledge").resolve()
    (kb / "handbook").mkdir(parents=True)
    (kb / "handbook" / "travel.md").write_text("---\ntitle: Train travel\n---\n# Train travel\n\nTrain tickets are "
                                               "booked through the Railway portal; first class is allowed on "
                                               "trips longer than four hours.\n")
    settings = settings_for(tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'deskmate.db'}",
                            redis_url=redis_url, worker_poll_delay_s=0.02, web_port=0)
    assert ingest(IndexStore(KnowledgeConfig.from_settings(settings)), kb, kb="default").created_version
    async with running_stack(settings) as stack:
        interaction_id, token = await start(stack, text="How do I book train tickets, and may I go first class?")
        row = await stack.wait_final(interaction_id)
        assert [s["location"] for s in row.sources] == ["handbook/travel.md"]
        async with stack.db.asession() as session:  # as an index built by an earlier version stored it
            stored = await session.get(Interaction, interaction_id)
            assert stored is not None
            stored.sources = [{**s, "location": str(kb / "handbook" / "travel.md")} for s in stored.sources]
            session.add(stored)
            await session.commit()
        view = await call(stack, "GET", f"/chat/api/interactions/{interaction_id}", with_token(token))
    assert view.status_code == 200
    assert [s["location"] for s in view.json()["sources"]] == ["handbook/travel.md"]
    assert str(tmp_path) not in view.text and "/srv/" not in view.text
