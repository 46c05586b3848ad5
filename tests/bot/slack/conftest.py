"""Slack tests: the real web app and worker (``running_stack``), a local fake of the Slack Web API, and
requests signed exactly as Slack signs them, built from the payloads in ``../shared/fixtures/slack``."""

from __future__ import annotations

import copy
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest

from bot.core.settings import Settings
from tests.conftest import FIXTURES_DIR
from tests.fakes.slack_api import BOT_USER_ID, FakeSlack, start_fake_slack
from tests.stack import Stack, running_stack

SLACK_FIXTURES = FIXTURES_DIR / "slack"
SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
HUMAN = "W222"  # the asking user of the fixtures (W111 is the bot user)
PUBLIC, PRIVATE, DM, SUPPORT, ALL = "C0PUBLIC", "G0PRIVATE", "D0DIRECT", "C0SUPPORT", "C0ALL"

_counter = itertools.count(1)


def fixture(name: str) -> Any:
    path = SLACK_FIXTURES / name
    return json.loads(path.read_text()) if name.endswith(".json") else path.read_text()


def sign(body: str, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    """Slack's v0 request signature: HMAC-SHA256 over ``v0:{timestamp}:{body}``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def unique_ts() -> str:
    return f"{int(time.time())}.{next(_counter):06d}"


def mention(text: str, *, channel: str = PUBLIC, thread_ts: str | None = None, user: str = HUMAN) -> dict[str, Any]:
    """bolt-python's app_mention payload with our text, channel and fresh ids."""
    body = copy.deepcopy(fixture("app_mention.json"))
    ts = unique_ts()
    body["event_id"] = f"Ev{next(_counter):08d}"
    body["event"].update(text=f"<@{BOT_USER_ID}> {text}", channel=channel, ts=ts, event_ts=ts, user=user)
    if thread_ts:
        body["event"]["thread_ts"] = thread_ts
    return body


def channel_message(text: str, *, channel: str = PUBLIC, thread_ts: str | None = None, user: str = HUMAN,
                    channel_type: str = "channel") -> dict[str, Any]:
    """bolt-python's plain channel message payload, adapted."""
    body = copy.deepcopy(fixture("message_channel.json"))
    ts = unique_ts()
    body["event_id"] = f"Ev{next(_counter):08d}"
    event = body["event"]
    event.update(text=text, channel=channel, ts=ts, event_ts=ts, user=user, channel_type=channel_type)
    event["blocks"][0]["elements"][0]["elements"][0]["text"] = text
    if thread_ts:
        event["thread_ts"] = thread_ts
    return body


def direct_message(text: str, *, channel: str = DM, thread_ts: str | None = "keep") -> dict[str, Any]:
    """bolt-python's message.im payload (an Assistant-panel thread); ``thread_ts=None`` makes it top-level."""
    body = copy.deepcopy(fixture("message_im_assistant_thread.json"))
    ts = unique_ts()
    body["event_id"] = f"Ev{next(_counter):08d}"
    body["event"].update(text=text, channel=channel, ts=ts, event_ts=ts)
    if thread_ts is None:
        body["event"].pop("thread_ts")
        body["event"].pop("parent_user_id")
    elif thread_ts != "keep":
        body["event"]["thread_ts"] = thread_ts
    return body


def block_action(action_id: str, value: str, *, channel: str, message_ts: str, response_url: str,
                 user: str = HUMAN) -> dict[str, Any]:
    body = copy.deepcopy(fixture("block_actions.json"))
    body["user"]["id"] = user
    body["container"].update(message_ts=message_ts, channel_id=channel, is_ephemeral=False)
    body["channel"]["id"] = channel
    body["response_url"] = response_url
    body["trigger_id"] = f"{next(_counter)}.222.valid"
    body["actions"][0].update(action_id=action_id, value=value, block_id=f"deskmate_feedback_{value}")
    return body


def slash_command(text: str, *, response_url: str, channel: str = PUBLIC, channel_name: str = "general",
                  user: str = HUMAN, command: str = "/deskmate") -> str:
    form = dict(parse_qsl(fixture("slash_command.form.txt")))
    form.update(command=command, text=text, response_url=response_url, channel_id=channel, channel_name=channel_name,
                user_id=user, trigger_id=f"{next(_counter)}.111.xxx")
    return urlencode(form)


class SlackClient:
    """Posts signed requests to the web app's /slack/events, as Slack would."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def post_raw(self, body: str, content_type: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.http.post("/slack/events", content=body.encode(),
                                    headers={"Content-Type": content_type, **(headers or {})})

    async def event(self, payload: dict[str, Any], *, retry_num: int | None = None) -> httpx.Response:
        body = json.dumps(payload)
        headers = sign(body)
        if retry_num is not None:
            headers |= {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
        return await self.post_raw(body, "application/json", headers)

    async def interactive(self, payload: dict[str, Any]) -> httpx.Response:
        body = urlencode({"payload": json.dumps(payload)})  # how Slack sends block_actions / view_submission
        return await self.post_raw(body, "application/x-www-form-urlencoded", sign(body))

    async def command(self, form: str) -> httpx.Response:
        return await self.post_raw(form, "application/x-www-form-urlencoded", sign(form))


@pytest.fixture
async def slack_api() -> AsyncIterator[FakeSlack]:
    async with start_fake_slack() as fake:
        fake.channels.update({PUBLIC: "public", PRIVATE: "private", DM: "im", SUPPORT: "public", ALL: "public"})
        yield fake


@pytest.fixture
def slack_settings(make_settings: Callable[..., Settings], slack_api: FakeSlack) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = dict(slack_bot_token="xoxb-test-token", slack_signing_secret=SIGNING_SECRET,
                                      slack_api_url=slack_api.api_url, slack_support_channel=SUPPORT)
        values.update(overrides)
        return make_settings(**values)

    return make


@pytest.fixture
async def slack_stack(slack_settings: Callable[..., Settings]) -> AsyncIterator[Stack]:
    async with running_stack(slack_settings()) as stack:
        yield stack


@pytest.fixture
def slack(slack_stack: Stack) -> SlackClient:
    return SlackClient(slack_stack.client)
