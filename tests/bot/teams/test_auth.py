"""With an app id configured every request's Bot Framework JWT is validated: anything else is a 401 (never a
500) and nothing is recorded, enqueued or sent. The valid path runs end to end against a local OpenID metadata /
JWKS server whose key signs the tokens (botbuilder's ``ChannelValidation.open_id_metadata_endpoint`` points at it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from arq.constants import default_queue_name
from botframework.connector.auth import ChannelValidation, MicrosoftAppCredentials

from bot.core.settings import Settings
from bot.queue import ANSWER_JOB, job_id
from tests.bot.teams.conftest import activity, post, recorded, settle, teams_settings
from tests.fakes.botframework import FakeConnector, OpenIdServer, start_openid_server
from tests.stack import Stack, running_stack

APP_ID = "6c2a3d6e-1b64-4c55-a0a5-3f9a1f0e2b77"
OUTBOUND_TOKEN = "outbound-test-token"


@pytest.fixture
def openid(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenIdServer]:
    with start_openid_server() as server:
        monkeypatch.setattr(ChannelValidation, "open_id_metadata_endpoint", server.metadata_url)
        # outbound calls need an Azure AD token for the bot; there is no Azure AD here
        monkeypatch.setattr(MicrosoftAppCredentials, "get_access_token", lambda self, force_refresh=False: OUTBOUND_TOKEN)
        yield server


@pytest.fixture
async def secured(make_settings: Callable[..., Settings], openid: OpenIdServer) -> AsyncIterator[Stack]:
    settings = teams_settings(make_settings, teams_app_id=APP_ID, teams_app_password="not-a-real-secret")
    async with running_stack(settings) as stack:
        yield stack
        await settle(stack)


async def nothing_happened(stack: Stack, connector: FakeConnector) -> None:
    assert await stack.interactions() == []
    # the queue's job ids, not arq's queued_jobs(): that one fails when a cron job finishes while it reads
    queued = await stack.web_runtime.redis.zrange(default_queue_name, 0, -1)
    assert [job for job in queued if job.decode().startswith(job_id(""))] == [], f"no {ANSWER_JOB} job"
    assert connector.calls == []


async def test_missing_malformed_or_invalid_tokens_get_401_and_nothing_is_enqueued(
        secured: Stack, connector: FakeConnector, openid: OpenIdServer) -> None:
    body = activity("message_personal", connector, text="How do I book travel?")
    _, recorded_headers = recorded("message_personal")
    service_url = body["serviceUrl"]
    cases = {
        "missing": {},
        "empty": {"Authorization": ""},
        "recorded placeholder": {"Authorization": recorded_headers["authorization"]},
        "not a jwt": {"Authorization": "Bearer not.a.jwt"},
        "garbage": {"Authorization": "Bearer %%%"},
        "bearer only": {"Authorization": "Bearer"},
        "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
        "foreign key": {"Authorization": "Bearer " + openid.foreign_token(app_id=APP_ID, service_url=service_url)},
        "other app": {"Authorization": "Bearer " + openid.token(app_id="00000000-0000-0000-0000-000000000001",
                                                                service_url=service_url)},
        "expired": {"Authorization": "Bearer " + openid.token(app_id=APP_ID, service_url=service_url, expires_in=-3600)},
        "other service url": {"Authorization": "Bearer " + openid.token(app_id=APP_ID, service_url="https://evil.example/")},
        "other issuer": {"Authorization": "Bearer " + openid.token(app_id=APP_ID, service_url=service_url,
                                                                   issuer="https://sts.windows.net/attacker/")},
        "unknown key id": {"Authorization": "Bearer " + openid.token(app_id=APP_ID, service_url=service_url)
                           .replace(openid.token(app_id=APP_ID, service_url=service_url).split(".")[0],
                                    "eyJhbGciOiJSUzI1NiIsImtpZCI6Im5vcGUiLCJ0eXAiOiJKV1QifQ")},
    }
    for name, headers in cases.items():
        response = await post(secured, body, headers)
        assert response.status_code == 401, (name, response.status_code, response.text)
    await nothing_happened(secured, connector)


async def test_valid_token_is_answered_and_outbound_calls_are_signed(secured: Stack, connector: FakeConnector,
                                                                    openid: OpenIdServer) -> None:
    body = activity("message_personal", connector, text="How much is the daily meal allowance when I travel?")
    token = openid.token(app_id=APP_ID, service_url=body["serviceUrl"])
    response = await post(secured, body, {"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    [row] = await secured.interactions()
    assert (await secured.wait_final(row.id)).status == "answered"
    shown = await connector.wait_for(lambda calls: [c for c in calls if c.card is not None and c.status < 400])
    assert shown[0].card is not None
    assert connector.stream_calls(), "a personal chat's answer was streamed, with signed calls too"
    assert {c.headers.get("Authorization") for c in connector.calls} == {f"Bearer {OUTBOUND_TOKEN}"}
    assert any(path == "/keys" for path in openid.requests), "the signing key came from the JWKS"


async def test_development_mode_ignores_the_header(teams_stack: Stack, connector: FakeConnector) -> None:
    _, recorded_headers = recorded("message_personal")
    body = activity("message_personal", connector, text="vpn not working")
    response = await post(teams_stack, body, {"Authorization": recorded_headers["authorization"]})
    assert response.status_code == 200
    assert len(await teams_stack.interactions()) == 1
    assert all("Authorization" not in c.headers for c in connector.calls), "no app id: outbound calls unsigned"
