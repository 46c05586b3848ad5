"""Bad input on ``POST /slack/events``, through the real aiohttp app: never a 500, and never a 404 for an event
Deskmate does not handle (Slack retries both). Unsigned garbage is refused as unsigned (401); garbage that
carries a valid signature is a bad request (400); an event type without a listener is acknowledged (200)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest

from tests.bot.slack.conftest import HUMAN, PUBLIC, SIGNING_SECRET, SlackClient, mention, sign
from tests.fakes.slack_api import FakeSlack
from tests.stack import Stack

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"

#: (id, body, content type): bodies Slack never sends; bolt used to answer each of them with a 500.
MALFORMED = [
    ("truncated-json", '{"type": "event_callback", "event": {', JSON),
    ("json-array", '[{"type": "event_callback"}]', JSON),
    ("json-string", '"event_callback"', JSON),
    ("json-number", "42", JSON),
    ("json-null", "null", JSON),
    ("array-sniffed-as-json", '{"a": 1}]', FORM),  # bolt sniffs a leading "{" as JSON whatever the type says
    ("form-payload-not-json", "payload=%7Bnot-json", FORM),
    ("form-payload-array", "payload=%5B1%2C2%5D", FORM),
    ("field-of-wrong-type", '{"type": "event_callback", "team": 5, "event": {"type": "app_mention"}}', JSON),
    ("authorizations-not-objects", '{"type": "event_callback", "authorizations": [5]}', JSON),
]


async def assert_nothing_happened(stack: Stack, slack_api: FakeSlack) -> None:
    await stack.settle()
    assert await stack.interactions() == []
    assert slack_api.calls_to("chat.postMessage") == [] and slack_api.calls_to("chat.postEphemeral") == []


@pytest.mark.parametrize("body,content_type", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
async def test_malformed_body_unsigned_is_401_and_signed_is_400(
        slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack, body: str, content_type: str) -> None:
    unsigned = await slack.post_raw(body, content_type)
    assert unsigned.status_code == 401, unsigned.text
    forged = await slack.post_raw(body, content_type, sign(body, "not-the-secret"))
    assert forged.status_code == 401, forged.text
    signed = await slack.post_raw(body, content_type, sign(body))
    assert signed.status_code == 400, signed.text
    await assert_nothing_happened(slack_stack, slack_api)


async def test_body_that_is_not_utf8_is_refused_not_a_500(slack_stack: Stack, slack: SlackClient,
                                                          slack_api: FakeSlack) -> None:
    raw = b'{"type": "event_callback", "x": "\xff\xfe"}'
    unsigned = await slack.http.post("/slack/events", content=raw, headers={"Content-Type": JSON})
    assert unsigned.status_code == 401
    ts = str(int(time.time()))
    digest = hmac.new(SIGNING_SECRET.encode(), f"v0:{ts}:".encode() + raw, hashlib.sha256).hexdigest()
    signed = await slack.http.post("/slack/events", content=raw, headers={
        "Content-Type": JSON, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"})
    assert signed.status_code == 400
    await assert_nothing_happened(slack_stack, slack_api)


@pytest.mark.parametrize("timestamp", ["not-a-number", "", "1.5e9", "0x65a0bc00", "1700000000.5"])
async def test_non_numeric_timestamp_is_401(slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack,
                                            timestamp: str) -> None:
    body = json.dumps(mention("How do I book travel?"))
    # the signature is computed over the bad timestamp too: only the timestamp is wrong
    digest = hmac.new(SIGNING_SECRET.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    headers = {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": f"v0={digest}"}
    response = await slack.post_raw(body, JSON, headers)
    assert response.status_code == 401, response.text
    await assert_nothing_happened(slack_stack, slack_api)


async def test_non_ascii_timestamp_header_is_401(slack_stack: Stack, slack: SlackClient,
                                                 slack_api: FakeSlack) -> None:
    body = json.dumps(mention("How do I book travel?"))
    response = await slack.http.post("/slack/events", content=body.encode(), headers=[
        ("Content-Type", JSON), ("X-Slack-Request-Timestamp", "1700000000\u00b2".encode()),
        ("X-Slack-Signature", "v0=00")])
    assert response.status_code == 401, response.text


async def test_non_ascii_signature_is_401(slack_stack: Stack, slack: SlackClient) -> None:
    body = json.dumps(mention("How do I book travel?"))
    response = await slack.http.post("/slack/events", content=body.encode(), headers=[
        ("Content-Type", JSON), ("X-Slack-Request-Timestamp", str(int(time.time()))),
        ("X-Slack-Signature", "v0=\u00e9".encode())])
    assert response.status_code == 401, response.text


def pin_added() -> dict:
    return {"token": "verification_token", "team_id": "T111", "api_app_id": "A111", "type": "event_callback",
            "event_id": f"EvPin{int(time.time() * 1000)}", "event_time": int(time.time()),
            "event": {"type": "pin_added", "user": HUMAN, "channel_id": PUBLIC, "event_ts": "1700000000.000100",
                      "item": {"type": "message", "channel": PUBLIC,
                               "message": {"type": "message", "user": HUMAN, "text": "<!channel> read this",
                                           "ts": "1700000000.000001"}}}}


async def test_unhandled_event_type_is_acknowledged_and_ignored(slack_stack: Stack, slack: SlackClient,
                                                               slack_api: FakeSlack) -> None:
    response = await slack.event(pin_added())
    assert response.status_code == 200, "a 404 makes Slack retry the event (and eventually disable the URL)"
    other = pin_added()
    other["event"]["type"] = "team_join"
    assert (await slack.event(other)).status_code == 200
    await assert_nothing_happened(slack_stack, slack_api)


async def test_unhandled_event_still_needs_a_signature(slack_stack: Stack, slack: SlackClient) -> None:
    body = json.dumps(pin_added())
    assert (await slack.post_raw(body, JSON)).status_code == 401


async def test_handled_requests_are_unchanged(slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack) -> None:
    assert (await slack.event(mention("How do I book travel?"))).status_code == 200
    placeholder = await slack_api.wait_for("chat.postMessage")
    await slack_api.wait_for("chat.update", ts=placeholder.response["ts"])


@pytest.mark.parametrize("shape", ["leading-whitespace", "nan-in-an-unread-field", "lone-surrogate"])
async def test_event_json_only_pythons_parser_reads_is_still_answered(
        slack_stack: Stack, slack: SlackClient, slack_api: FakeSlack, shape: str) -> None:
    """The door reads events with orjson (strict JSON); a body only bolt's parser reads is still Slack's event and
    is answered once, through bolt."""
    payload = mention("How do I book travel?")
    body = json.dumps(payload)
    if shape == "leading-whitespace":
        body = "\n " + body
    elif shape == "nan-in-an-unread-field":
        body = body[:-1] + ', "x_float": NaN}'
    else:
        body = body[:-1] + ', "x_text": "\\ud800"}'
    response = await slack.post_raw(body, JSON, sign(body))
    assert response.status_code == 200, response.text
    placeholder = await slack_api.wait_for("chat.postMessage", channel=PUBLIC)
    await slack_api.wait_for("chat.update", ts=placeholder.response["ts"])
    await slack_stack.settle()
    assert len(await slack_stack.interactions()) == 1


@pytest.mark.parametrize("invisible", [
    "\u200b", "\u200b\u200c\u200d", "\u200e\u200f", "\u2060", "\ufeff", "\u202a\u202b\u202c\u202d\u202e",
    "\u2066\u2067\u2068\u2069", "\u00ad", "\u061c", "\u180e", " \u200b \u00a0 \u2063\n\u2064\t",
], ids=lambda s: "+".join(f"U{ord(c):04X}" for c in s))
async def test_message_of_only_invisible_characters_is_empty(slack_stack: Stack, slack: SlackClient,
                                                             slack_api: FakeSlack, invisible: str) -> None:
    await slack.event(mention(invisible))
    hint = await slack_api.wait_for("chat.postEphemeral")
    assert "Ask me a question" in hint.args["text"]
    await slack_stack.settle()
    assert await slack_stack.interactions() == [], "nothing queued (it used to be answered 'not found')"
