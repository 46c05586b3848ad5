"""The Bot Framework signing keys are fetched without ever stalling the web process.

botbuilder downloads the OpenID metadata and the JWKS with a blocking ``requests.get`` (no timeout) inside the
request handler: while that download hung, the whole event loop stood still — ``/healthz`` timed out and Slack
events went unacknowledged. Here the metadata URL points at a local endpoint that accepts the connection and
never answers, and the web app (real stack, Slack and Teams both configured, app id set) must keep serving:
``/healthz`` and a signed Slack event are answered while Teams requests wait for the keys; the Teams requests get
a 503 within the fetch timeout; five concurrent requests cause one fetch; after the failure the next request is
refused at once, without another fetch. With a working key endpoint, a token signed by its key is accepted and
the keys are fetched once, then served from the cache.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from botframework.connector.auth import ChannelValidation, MicrosoftAppCredentials
from botframework.connector.auth import jwt_token_extractor

from bot.core.settings import Settings
from tests.bot.slack.conftest import PUBLIC, SIGNING_SECRET, SUPPORT, SlackClient, mention
from tests.bot.teams.conftest import activity, post, settle, teams_settings
from tests.fakes.botframework import FakeConnector, HangingServer, OpenIdServer, start_hanging_server, start_openid_server
from tests.fakes.slack_api import FakeSlack, start_fake_slack
from tests.stack import Stack, running_stack

APP_ID = "6c2a3d6e-1b64-4c55-a0a5-3f9a1f0e2b77"
FETCH_TIMEOUT_S = 5.0  # bot.teams.auth's default: one fetch of the metadata and the keys, both documents
MARGIN_S = 1.5


@pytest.fixture(autouse=True)
def no_outbound_login(monkeypatch: pytest.MonkeyPatch) -> None:
    # outbound calls need an Azure AD token for the bot; there is no Azure AD here
    monkeypatch.setattr(MicrosoftAppCredentials, "get_access_token", lambda self, force_refresh=False: "outbound")


@pytest.fixture
def hung(monkeypatch: pytest.MonkeyPatch) -> Iterator[HangingServer]:
    with start_hanging_server() as server:
        monkeypatch.setattr(ChannelValidation, "open_id_metadata_endpoint", server.metadata_url)
        yield server


@pytest.fixture
async def slack_api() -> AsyncIterator[FakeSlack]:
    async with start_fake_slack() as fake:
        fake.channels.update({PUBLIC: "public", SUPPORT: "public"})
        yield fake


def secured_settings(make_settings: Callable[..., Settings], **more: Any) -> Settings:
    return teams_settings(make_settings, teams_app_id=APP_ID, teams_app_password="not-a-real-secret", **more)


@pytest.fixture
async def both(make_settings: Callable[..., Settings], slack_api: FakeSlack, hung: HangingServer) -> AsyncIterator[Stack]:
    """Slack and Teams (with an app id) in one web process; the Teams keys come from the hanging endpoint."""
    settings = secured_settings(make_settings, slack_bot_token="xoxb-test-token", slack_signing_secret=SIGNING_SECRET,
                                slack_api_url=slack_api.api_url, slack_support_channel=SUPPORT)
    async with running_stack(settings) as stack:
        yield stack
        await stack.settle()
        await settle(stack)


async def test_a_hanging_key_endpoint_stalls_only_the_teams_requests_that_need_the_keys(
        both: Stack, hung: HangingServer, connector: FakeConnector) -> None:
    body = activity("message_personal", connector, text="How do I book travel?")
    # a well-formed token from the right issuer: botbuilder needs the signing keys to check it
    with start_openid_server() as signer:
        token = signer.token(app_id=APP_ID, service_url=body["serviceUrl"])
    headers = {"Authorization": f"Bearer {token}"}

    started = time.monotonic()
    teams = [asyncio.create_task(post(both, body, headers)) for _ in range(5)]
    await hung.wait_for_requests(1)  # the key fetch is under way (and hangs)

    health = await both.client.get("/healthz")
    health_at = time.monotonic() - started
    slack = await SlackClient(both.client).event(mention("What is the travel policy?"))
    slack_at = time.monotonic() - started
    pending = [task for task in teams if not task.done()]

    assert health.status_code == 200
    assert health_at < 1.0, f"/healthz answered {health_at:.1f}s after the Teams requests: the event loop stalled"
    assert slack.status_code == 200
    assert slack_at < 2.0, f"the Slack event was acknowledged after {slack_at:.1f}s (Slack allows 3 s)"
    assert len(pending) == 5, "the Teams requests were still waiting for the keys while the others were answered"

    responses = await asyncio.gather(*teams)
    teams_at = time.monotonic() - started
    assert [r.status_code for r in responses] == [503] * 5, [r.text for r in responses]
    assert all(r.headers.get("Retry-After") for r in responses)
    assert teams_at < FETCH_TIMEOUT_S + MARGIN_S, f"the Teams requests were answered after {teams_at:.1f}s"
    assert hung.requests == ["/openid"], "five concurrent requests, one fetch"

    # the fetch failed a moment ago: the next request is refused at once, without waiting for another fetch
    again_started = time.monotonic()
    again = await post(both, body, headers)
    assert again.status_code == 503
    assert time.monotonic() - again_started < 0.5
    assert hung.requests == ["/openid"]

    await both.settle()
    rows = await both.interactions()
    assert [row.platform for row in rows] == ["slack"], "only the Slack question was recorded"


@pytest.fixture
def cached_openid(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenIdServer]:
    with start_openid_server(cache_control="public, max-age=3600") as server:
        monkeypatch.setattr(ChannelValidation, "open_id_metadata_endpoint", server.metadata_url)
        yield server


@pytest.fixture
async def secured(make_settings: Callable[..., Settings], cached_openid: OpenIdServer) -> AsyncIterator[Stack]:
    async with running_stack(secured_settings(make_settings)) as stack:
        yield stack
        await settle(stack)


async def test_a_token_signed_by_a_served_key_is_accepted_and_the_keys_are_fetched_once(
        secured: Stack, cached_openid: OpenIdServer, connector: FakeConnector,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def blocking_get(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("botbuilder's blocking requests.get was called for the signing keys")

    monkeypatch.setattr(jwt_token_extractor.requests, "get", blocking_get)
    for number, text in enumerate(("How much is the daily meal allowance?", "Can I book business class?")):
        body = activity("message_personal", connector, text=text, id=f"1700000000{number}")
        token = cached_openid.token(app_id=APP_ID, service_url=body["serviceUrl"])
        response = await post(secured, body, {"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        assert cached_openid.requests == ["/openid", "/keys"], "fetched for the first request, cached for the second"
    assert len(await secured.interactions()) == 2

    # a forged token (same key id, another key) is still refused, from the cached keys
    body = activity("message_personal", connector, text="And first class?", id="17000000009")
    forged = cached_openid.foreign_token(app_id=APP_ID, service_url=body["serviceUrl"])
    assert (await post(secured, body, {"Authorization": f"Bearer {forged}"})).status_code == 401
    assert cached_openid.requests == ["/openid", "/keys"]
