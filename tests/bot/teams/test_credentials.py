"""Deskmate's outbound Bot Framework token (bot/teams/credentials.py): fetched once for every turn, not once per
message, and never on the event loop — against a local fake of the Microsoft Entra ID token endpoint over real
HTTPS, through botbuilder's and MSAL's own code."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msal
import pytest
from botbuilder.integration.aiohttp import ConfigurationBotFrameworkAuthentication
from botframework.connector.auth import AuthenticationConstants, ClaimsIdentity, microsoft_app_credentials

from bot.teams.adapter import bot_authentication
from tests.fakes.graph_api import FakeGraph, start_fake_graph

SERVICE_URL = "https://smba.trafficmanager.net/teams/"


@pytest.fixture
def entra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGraph]:
    with start_fake_graph(tmp_path) as fake:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.ca_file))  # MSAL's requests trust the fake's CA
        # MSAL asks login.microsoftonline.com whether an authority it does not know is real (instance discovery);
        # there is no such server here, so the fake's authority is taken as it is
        monkeypatch.setattr(microsoft_app_credentials, "ConfidentialClientApplication",
                            partial(msal.ConfidentialClientApplication, instance_discovery=False))
        yield fake


def config(fake: FakeGraph) -> Any:
    """A single-tenant bot whose login endpoint is the fake (botbuilder's TO_CHANNEL_FROM_BOT_LOGIN_URL)."""
    return SimpleNamespace(APP_ID=fake.client_id, APP_PASSWORD=fake.client_secret, APP_TYPE="SingleTenant",
                           APP_TENANTID=fake.tenant_id, VALIDATE_AUTHORITY=False,
                           TO_CHANNEL_FROM_BOT_LOGIN_URL=f"{fake.authority_url}/{fake.tenant_id}")


def connectors(auth: ConfigurationBotFrameworkAuthentication, fake: FakeGraph) -> Any:
    """What the adapter uses to make the connector client of one turn."""
    identity = ClaimsIdentity({AuthenticationConstants.AUDIENCE_CLAIM: fake.client_id,
                               AuthenticationConstants.APP_ID_CLAIM: fake.client_id}, True)
    return auth.create_connector_factory(identity)


def token_requests(fake: FakeGraph) -> int:
    return sum(1 for r in fake.requests if r.method == "POST" and r.path.endswith("/oauth2/v2.0/token"))


async def test_every_message_is_signed_with_one_token_fetched_once(entra: FakeGraph) -> None:
    turns = connectors(bot_authentication(config(entra)), entra)
    clients = [await turns.create(SERVICE_URL, None) for _ in range(3)]  # three messages sent
    signed = [c.config.credentials.signed_session().headers["Authorization"] for c in clients]
    assert token_requests(entra) == 1
    assert len(set(signed)) == 1 and signed[0].removeprefix("Bearer ") in entra.tokens

    # botbuilder's own factory, which this replaces: a token request for every message
    plain = connectors(ConfigurationBotFrameworkAuthentication(config(entra)), entra)
    for _ in range(2):
        (await plain.create(SERVICE_URL, None)).config.credentials.signed_session()
    assert token_requests(entra) == 3


async def test_a_slow_token_endpoint_never_freezes_the_event_loop(entra: FakeGraph) -> None:
    entra.token_delay_s = 0.5
    ticks = 0

    async def ticker() -> None:  # what else the process does meanwhile: acks, other answers
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        client = await connectors(bot_authentication(config(entra)), entra).create(SERVICE_URL, None)
    finally:
        task.cancel()
    assert token_requests(entra) == 1
    assert ticks >= 5, "the event loop stood still while the token was fetched"
    client.config.credentials.signed_session()  # signing on the loop reads MSAL's cache: no second request
    assert token_requests(entra) == 1


async def test_a_wrong_secret_fails_the_turn_with_entra_ids_reason(entra: FakeGraph) -> None:
    wrong = config(entra)
    wrong.APP_PASSWORD = "not-the-secret"
    with pytest.raises(PermissionError, match="invalid_client"):
        await connectors(bot_authentication(wrong), entra).create(SERVICE_URL, None)
